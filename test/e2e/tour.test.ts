import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/ports.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { runTour } from '../helpers/tour.js';
import { waitFor } from '../helpers/wait.js';

// The README's tour, run as a new user would: a relay started with no
// configuration, the secrets copied from its log, then the README's own code
// blocks (only the host and port rewritten).

const ROOT = resolve(import.meta.dirname, '../..');

async function startFresh(env: Record<string, string>) {
  const port = await freePort();
  const lines: string[] = [];
  // Only what a fresh shell has: no PUSHRELAY_* at all.
  const proc = spawn(process.execPath, [resolve(ROOT, 'dist/main.js')], {
    env: { PATH: process.env.PATH, PORT: String(port), HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout.on('data', (c: Buffer) => lines.push(...c.toString().split('\n').filter(Boolean)));
  proc.stderr.on('data', (c: Buffer) => lines.push(...c.toString().split('\n').filter(Boolean)));
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok, { timeoutMs: 15_000 });
  // pino writes asynchronously: /readyz can answer before the startup lines have come through the pipe.
  await waitFor(() => lines.some((l) => l.includes('node built')), { what: 'the startup log lines' });
  const dev = lines.map((l) => JSON.parse(l) as Record<string, string>).find((l) => l.publisherSecret);
  return { port, proc, lines, dev };
}

describe('the README tour', () => {
  const cleanups: (() => unknown)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('works as written against a relay started with no configuration', async () => {
    const { port, proc, lines, dev } = await startFresh({});
    cleanups.push(() => proc.kill('SIGKILL'));
    expect(dev, 'the development-mode log line with the generated secrets').toBeDefined();
    expect(dev!.msg).toContain('development mode');
    expect(lines.some((l) => l.includes('"mode":"standalone"'))).toBe(true);
    const stdout = await runTour({
      port,
      publisherSecret: dev!.publisherSecret!,
      jwtSecret: dev!.jwtSecret!,
      steps: ['curl', 'form'],
    });
    expect(stdout).toContain('connected as alice');
    expect(stdout).toContain('"online":{"users":1,"sockets":1}');
    expect(stdout).toContain('bid {"amount":120,"order":42} user:alice');
    expect(stdout).toContain('bid {"amount":125} user:alice');
  });

  it('publishes through redis-cli when the relay runs with REDIS_URL', async () => {
    const redis: RedisServer = await startRedis();
    cleanups.push(() => redis.stop());
    const { port, proc, dev } = await startFresh({ REDIS_URL: redis.url });
    cleanups.push(() => proc.kill('SIGKILL'));
    // The ingest lease is taken at start; the README's command, pointed at this test's Redis.
    const stdout = await runTour({
      port,
      publisherSecret: dev!.publisherSecret!,
      jwtSecret: dev!.jwtSecret!,
      steps: ['redis-cli'],
      redisPort: redis.port,
    });
    expect(stdout).toContain('bid {"amount":140} user:alice');
  });
});
