import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// dist/main.js started as an operator starts it, with settings it must refuse:
// it exits 1 before listening, says which variable is wrong, and never echoes
// a secret into the logs that collect its stderr.

const MAIN = resolve(import.meta.dirname, '../../dist/main.js');
const exec = promisify(execFile);
const strong = 'q7Vd9Zk2mP4xW8rT1yL6nB3cH5jF0gSaE2uR';
const production = {
  NODE_ENV: 'production',
  PUSHRELAY_KEYS: `app:${strong}`,
  PUSHRELAY_JWT_SECRET: strong,
  PUSHRELAY_CORS_ORIGINS: 'https://app.example.com',
  PORT: '0',
  HOST: '127.0.0.1',
};

async function start(env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  try {
    await exec(process.execPath, [MAIN], { env: { PATH: process.env.PATH, ...env }, timeout: 20_000 });
    return { code: 0, stderr: '' };
  } catch (err) {
    const e = err as { code: number | string; stderr: string };
    return { code: Number(e.code), stderr: e.stderr };
  }
}

describe('a node started with settings it must refuse', () => {
  it('exits 1 in production with a weak publisher secret, naming the variable and not the secret', async () => {
    const weak = ['compose-dev-publisher-secret-not-for-production', 'a'.repeat(40)];
    const runs = await Promise.all(weak.map((w) => start({ ...production, PUSHRELAY_KEYS: `app:${w}` })));
    runs.forEach((run, i) => {
      expect(run.code, weak[i]).toBe(1);
      expect(run.stderr).toMatch(/PUSHRELAY_KEYS: the secret of key "app" /);
      expect(run.stderr).not.toContain(weak[i]);
    });
  });

  it('exits 1 on an unknown NODE_ENV, naming the values it takes', async () => {
    const run = await start({ ...production, NODE_ENV: 'prod' });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('NODE_ENV: must be one of production, development, test, got "prod"');
  });

  it('exits 1 on a malformed REDIS_URL without printing its password', async () => {
    const run = await start({ ...production, REDIS_URL: 'redis://default:Tr0ub4dor-pw@redis host:6379/0' });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('REDIS_URL: must be a URL');
    expect(run.stderr).toContain('redis://***@redis host:6379/0');
    expect(run.stderr).not.toContain('Tr0ub4dor');
  });
});
