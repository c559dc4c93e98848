import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from './ports.js';
import { sleep, waitFor } from './wait.js';

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  /** A plain client for assertions and raw PUBLISH; closed by stop(). */
  client(): Redis;
  /** SIGKILL: no shutdown, no final save. */
  kill(): Promise<void>;
  /** SIGSTOP: connections stay open and nothing answers (a hung Redis, a black hole). */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** Starts it again on the same port and data directory (AOF survives when enabled). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A private redis-server on a free port, so tests never touch the machine's
 * shared Redis and can kill and restart theirs.
 */
export async function startRedis(
  options: { appendonly?: boolean; appendfsync?: 'always' | 'everysec'; args?: string[] } = {},
): Promise<RedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'pushrelay-redis-'));
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    options.appendonly ? 'yes' : 'no',
    '--appendfsync',
    options.appendfsync ?? 'everysec',
    '--dir',
    dir,
    '--daemonize',
    'no',
    '--loglevel',
    'warning',
    ...(options.args ?? []),
  ];
  let proc: ChildProcess | undefined;
  const clients: Redis[] = [];

  const launch = async () => {
    proc = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'inherit'] });
    const probe = new Redis(port, '127.0.0.1', {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on('error', () => {});
    try {
      await waitFor(
        async () => {
          if (probe.status !== 'ready') await probe.connect().catch(() => {});
          return (await probe.ping()) === 'PONG';
        },
        { what: `redis-server on ${port}`, timeoutMs: 10_000 },
      );
    } finally {
      probe.disconnect();
    }
  };
  const exited = () =>
    new Promise<void>((resolve) => {
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) resolve();
      else proc.once('exit', () => resolve());
    });

  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    client() {
      const c = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 });
      c.on('error', () => {});
      clients.push(c);
      return c;
    },
    async kill() {
      proc?.kill('SIGKILL');
      await exited();
    },
    pause() {
      proc?.kill('SIGSTOP');
    },
    resume() {
      proc?.kill('SIGCONT');
    },
    async restart() {
      await exited();
      // The port can stay in TIME_WAIT-free use for a moment after the kill.
      for (let attempt = 0; ; attempt++) {
        try {
          await launch();
          return;
        } catch (err) {
          if (attempt >= 3) throw err;
          await sleep(200);
        }
      }
    },
    async stop() {
      for (const c of clients) c.disconnect();
      proc?.kill('SIGCONT');
      proc?.kill('SIGKILL');
      await exited();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
