import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { RedisTarget } from '../../src/config/index.js';
import { type RedisServer, startRedis } from './redis.js';
import { waitFor } from './wait.js';

const run = promisify(execFile);

export interface RedisClusterSetup {
  readonly masters: readonly RedisServer[];
  /** REDIS_URL for the relay. */
  readonly url: string;
  readonly target: RedisTarget;
  /** The master serving a slot. */
  masterOf(slot: number): RedisServer;
  stop(): Promise<void>;
}

/**
 * Three masters (no replicas), each a real `redis-server --cluster-enabled
 * yes` on a free port, joined by `redis-cli --cluster create`.
 */
export async function startRedisCluster(): Promise<RedisClusterSetup> {
  const masters = await Promise.all(
    [0, 1, 2].map(() =>
      startRedis({
        args: [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          'nodes.conf',
          '--cluster-node-timeout',
          '2000',
        ],
      }),
    ),
  );
  await run('redis-cli', [
    '--cluster',
    'create',
    ...masters.map((m) => `127.0.0.1:${m.port}`),
    '--cluster-replicas',
    '0',
    '--cluster-yes',
  ]);
  const clients = masters.map((m) => m.client());
  await waitFor(
    async () => {
      for (const c of clients)
        if (!/cluster_state:ok/.test((await c.call('CLUSTER', 'INFO')) as string)) return false;
      return true;
    },
    { timeoutMs: 20_000, intervalMs: 100, what: 'cluster_state:ok on all three masters' },
  );
  const owner = new Array<RedisServer>(16384);
  const slots = (await clients[0]!.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][];
  for (const [from, to, [, port]] of slots) {
    const master = masters.find((m) => m.port === Number(port))!;
    for (let s = from; s <= to; s++) owner[s] = master;
  }
  const nodes = masters.map((m) => ({ host: '127.0.0.1', port: m.port }));
  return {
    masters,
    url: `redis+cluster://${nodes.map((n) => `${n.host}:${n.port}`).join(',')}`,
    target: { kind: 'cluster', nodes },
    masterOf: (slot) => owner[slot]!,
    async stop() {
      await Promise.all(masters.map((m) => m.stop()));
    },
  };
}
