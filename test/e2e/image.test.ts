import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, readDockerfile } from '../helpers/deploy.js';
import { freePort } from '../helpers/ports.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);

// The image's commands, run the way Docker runs them (no Docker here): the
// ENTRYPOINT and CMD exec form from the repository root, which holds what the
// image's WORKDIR does (dist/, node_modules/, package.json), with the
// Dockerfile's ENV; and its HEALTHCHECK command against that process.

const docker = readDockerfile();
const final = docker.stages.at(-1)!;
const one = (op: string) => final.instructions.find((i) => i.op === op)!;
const argv = [...one('ENTRYPOINT').exec!, ...one('CMD').exec!];
const imageEnv = Object.fromEntries(
  final.instructions.filter((i) => i.op === 'ENV').map((i) => i.args.split('=') as [string, string]),
);
const healthcheck = one('HEALTHCHECK').exec!;
const strong = '3c9f1a7e5b2d8046cf1e9a7b3d5c2e8f6a0b4d7c';

function startImage(env: Record<string, string>) {
  const lines: string[] = [];
  const proc = spawn(argv[0]!, argv.slice(1), {
    cwd: ROOT,
    env: { PATH: process.env.PATH, ...imageEnv, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout.on('data', (c: Buffer) => lines.push(...c.toString().split('\n').filter(Boolean)));
  proc.stderr.on('data', (c: Buffer) => lines.push(...c.toString().split('\n').filter(Boolean)));
  const exited = once(proc, 'exit').then(([code]) => code as number | null);
  return { proc, lines, exited };
}

async function health(port: number): Promise<number> {
  try {
    await run(healthcheck[0]!, healthcheck.slice(1), { env: { PATH: process.env.PATH, PORT: String(port) } });
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

describe('the image’s commands', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('refuse to start without production settings: the image defaults to NODE_ENV=production', async () => {
    expect(imageEnv.NODE_ENV).toBe('production');
    const port = await freePort();
    const { exited, lines } = startImage({ PORT: String(port) });
    expect(await exited).toBe(1);
    expect(lines.join('\n')).toMatch(/PUSHRELAY_KEYS: required in production/);
  });

  it('start a node the HEALTHCHECK passes, which SIGTERM drains and stops with exit code 0', async () => {
    const port = await freePort();
    const node = startImage({
      PORT: String(port),
      REDIS_URL: redis.url,
      PUSHRELAY_KEYS: `app:${strong}`,
      PUSHRELAY_JWT_SECRET: strong,
      PUSHRELAY_CORS_ORIGINS: 'https://app.example.com',
      PUSHRELAY_DRAIN_SECONDS: '1',
    });
    try {
      await waitFor(async () => (await health(port)) === 0, {
        what: 'the HEALTHCHECK to pass',
        timeoutMs: 15_000,
      });
      node.proc.kill('SIGTERM');
      expect(await node.exited).toBe(0);
    } finally {
      node.proc.kill('SIGKILL');
    }
    // The relay's own shutdown ran: the signal reached node, not a shell that died in its place.
    const messages = node.lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(messages).toContain('shutting down');
    expect(messages).toContain('drained');
    expect(messages.at(-1)).toBe('bye');
    expect(await health(port)).not.toBe(0);
  });
});
