import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from './ports.js';
import { type RedisServer, startRedis } from './redis.js';
import { waitFor } from './wait.js';

export const MASTER_NAME = 'relaymaster';

export interface SentinelSetup {
  /** The two data servers; which one is master changes with a failover. */
  readonly servers: readonly RedisServer[];
  readonly sentinelPorts: readonly number[];
  /** REDIS_URL for the relay. */
  readonly url: string;
  /** A client on the first sentinel, for SENTINEL commands. */
  sentinel(): Redis;
  /** Port of the master as the first sentinel sees it now. */
  masterPort(): Promise<number>;
  /** Resolves once all three sentinels name a master other than `port`. */
  movedFrom(port: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A master, one replica and three sentinels, each a real process on a free
 * port. Both data servers refuse writes without a connected replica
 * (`min-replicas-to-write 1`), so a master cut off from its replica, or just
 * demoted, cannot take writes that the failover would then throw away.
 */
export async function startSentinels(): Promise<SentinelSetup> {
  // No 5 s wait before a full sync (Redis 7's default), so a replica is usable at once.
  const guard = [
    '--min-replicas-to-write',
    '1',
    '--min-replicas-max-lag',
    '2',
    '--repl-diskless-sync-delay',
    '0',
  ];
  const master = await startRedis({ args: guard });
  const replica = await startRedis({ args: [...guard, '--replicaof', '127.0.0.1', String(master.port)] });
  const probe = master.client();
  await waitFor(async () => /min_slaves_good_slaves:1/.test(await probe.info('replication')), {
    what: 'the replica to be in sync',
  });

  const dir = mkdtempSync(join(tmpdir(), 'pushrelay-sentinel-'));
  const procs: ChildProcess[] = [];
  const clients: Redis[] = [];
  const sentinelPorts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    sentinelPorts.push(port);
    const conf = join(dir, `sentinel-${i}.conf`);
    // Sentinel rewrites its own configuration file, so each gets a writable one.
    writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        'daemonize no',
        `dir ${dir}`,
        'loglevel warning',
        `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${master.port} 2`,
        `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
        `sentinel failover-timeout ${MASTER_NAME} 5000`,
        `sentinel parallel-syncs ${MASTER_NAME} 1`,
        '',
      ].join('\n'),
    );
    procs.push(spawn('redis-server', [conf, '--sentinel'], { stdio: ['ignore', 'ignore', 'inherit'] }));
  }
  const client = (port: number) => {
    const c = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1, lazyConnect: false });
    c.on('error', () => {});
    clients.push(c);
    return c;
  };
  const sentinels = sentinelPorts.map(client);
  // A failover needs each sentinel to know the replica and the other two.
  // They usually do within 3 s; under a loaded CI machine a sentinel may
  // flag the replica down for a while (down-after is 1 s), so the wait is
  // long, and a timeout says (as waitFor's last error) what each saw last.
  await waitFor(
    async () => {
      const views: string[] = [];
      let ready = true;
      for (const s of sentinels) {
        const replicas = (await s.call('SENTINEL', 'REPLICAS', MASTER_NAME)) as string[][];
        const others = (await s.call('SENTINEL', 'SENTINELS', MASTER_NAME)) as unknown[];
        const flags = replicas.map((r) => `${r[r.indexOf('name') + 1]} ${r[r.indexOf('flags') + 1]}`);
        views.push(`replicas [${flags.join(', ')}], ${others.length} other sentinels`);
        const up = replicas.filter((r) => r[r.indexOf('flags') + 1] === 'slave');
        if (up.length !== 1 || others.length !== 2) ready = false;
      }
      if (!ready) throw new Error(`seen: ${views.join('; ')}`);
      return true;
    },
    { timeoutMs: 30_000, intervalMs: 200, what: 'three sentinels that know the replica and each other' },
  );

  return {
    servers: [master, replica],
    sentinelPorts,
    url: `redis+sentinel://${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',')}/${MASTER_NAME}`,
    sentinel: () => sentinels[0]!,
    async masterPort() {
      const [, port] = (await sentinels[0]!.call(
        'SENTINEL',
        'GET-MASTER-ADDR-BY-NAME',
        MASTER_NAME,
      )) as string[];
      return Number(port);
    },
    async movedFrom(port) {
      await waitFor(
        async () => {
          for (const s of sentinels) {
            const [, p] = (await s.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME)) as string[];
            if (Number(p) === port) return false;
          }
          return true;
        },
        { timeoutMs: 20_000, intervalMs: 100, what: 'every sentinel to name the new master' },
      );
    },
    async stop() {
      for (const c of clients) c.disconnect();
      for (const p of procs) p.kill('SIGKILL');
      await Promise.all(
        procs.map(
          (p) =>
            new Promise<void>((resolve) => {
              if (p.exitCode !== null || p.signalCode !== null) resolve();
              else p.once('exit', () => resolve());
            }),
        ),
      );
      await Promise.all([master.stop(), replica.stop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
