import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/ports.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { runTour } from '../helpers/tour.js';
import { waitFor } from '../helpers/wait.js';

// The README's tour, run as a new user would: a relay started with no
// configuration, the secrets copied from its log, then the README's own code
// blocks (only the host and port rewritten).

const ROOT = resolve(import.meta.dirname, '../..');

/** A checkout of its own per test: development secrets are kept under the directory a relay starts in. */
const checkouts: string[] = [];
function checkout(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pushrelay-tour-'));
  checkouts.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of checkouts) rmSync(dir, { recursive: true, force: true });
});

async function startFresh(env: Record<string, string>, cwd: string) {
  const port = await freePort();
  const lines: string[] = [];
  // Only what a fresh shell has: no PUSHRELAY_* at all.
  const proc = spawn(process.execPath, [resolve(ROOT, 'dist/main.js')], {
    env: { PATH: process.env.PATH, PORT: String(port), HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd,
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
    const { port, proc, lines, dev } = await startFresh({}, checkout());
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
    const { port, proc, dev } = await startFresh({ REDIS_URL: redis.url }, checkout());
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

  it('keeps the secrets of steps 1-2 when the relay restarts in cluster mode, for every node of the checkout', async () => {
    const dir = checkout();
    const first = await startFresh({}, dir);
    first.proc.kill('SIGKILL');
    const file = join(dir, '.pushrelay/dev-secrets.json');
    expect(first.dev!.file).toBe(file);
    expect(first.dev!.msg).toContain('.pushrelay/dev-secrets.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);

    // The reader switches to cluster mode and starts two nodes: the exported secrets still hold.
    const redis: RedisServer = await startRedis();
    cleanups.push(() => redis.stop());
    const nodes = await Promise.all([
      startFresh({ REDIS_URL: redis.url }, dir),
      startFresh({ REDIS_URL: redis.url }, dir),
    ]);
    for (const n of nodes) {
      cleanups.push(() => n.proc.kill('SIGKILL'));
      expect(n.dev!.publisherSecret).toBe(first.dev!.publisherSecret);
      expect(n.dev!.jwtSecret).toBe(first.dev!.jwtSecret);
    }
    const stdout = await runTour({
      port: nodes[1]!.port,
      publisherSecret: first.dev!.publisherSecret!,
      jwtSecret: first.dev!.jwtSecret!,
      steps: ['curl'],
    });
    expect(stdout).toContain('connected as alice');
    expect(stdout).toContain('bid {"amount":120,"order":42} user:alice');
    // The file holds secrets: git must not pick it up.
    expect(readFileSync(resolve(ROOT, '.gitignore'), 'utf8').split('\n')).toContain('.pushrelay/');
  });
});
