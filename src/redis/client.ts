import { Cluster, type ClusterOptions, Redis as IORedis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { RedisTarget } from '../config/index.js';

/** A connection to one Redis (possibly found through Sentinel) or to a whole Redis Cluster. */
export type Redis = IORedis | Cluster;

export type RedisRole = 'command' | 'subscriber' | 'adapter-pub' | 'adapter-sub' | 'ingest' | 'stream';

/** Longest XREADGROUP BLOCK a 'stream' connection issues, in ms; its command timeout allows for it. */
export const STREAM_BLOCK_MS = 1000;

/**
 * One place creates every Redis connection, so each has an error listener
 * (ioredis prints unhandled error events and an unlistened 'error' would
 * crash the process) and the failure policy is the same everywhere.
 *
 * Command connections fail fast while Redis is away (no offline queue, no
 * resend of in-flight commands): a publish then answers 503 at once instead of
 * hanging, and is never executed twice behind the publisher's back.
 * Subscriber connections queue and resubscribe by themselves.
 *
 * With Sentinel every connection asks the sentinels for the master, listens
 * for `+switch-master` and reconnects to the new master on a failover. With
 * Redis Cluster, subscriber connections use sharded pub/sub: one connection
 * per master, each SSUBSCRIBEd to the delivery channels of its slots.
 */
export function createRedis(target: RedisTarget | URL, role: RedisRole, log: Logger): Redis {
  const t: RedisTarget = target instanceof URL ? { kind: 'single', url: target } : target;
  // 'ingest' subscribes to the raw ingest channels (every node receives every
  // raw message), apart from the delivery subscriptions, so a burst of raw
  // ingest cannot push the delivery connection past Redis's output-buffer limit.
  const subscriber = role === 'subscriber' || role === 'adapter-sub' || role === 'ingest';
  const options: RedisOptions = {
    connectionName: `pushrelay-${role}`,
    lazyConnect: false,
    enableOfflineQueue: subscriber,
    // ioredis writes a SUBSCRIBE before its ready check (Redis allows it while
    // loading); one sent while a connection comes back puts it in subscriber
    // mode, the check's INFO is refused and ioredis starts over, failing the
    // sockets being set up. Pub/sub needs no ready check: the command
    // connection keeps it.
    enableReadyCheck: !subscriber,
    autoResubscribe: true,
    autoResendUnfulfilledCommands: subscriber,
    maxRetriesPerRequest: subscriber ? null : 0,
    // A 'stream' connection blocks in XREADGROUP for up to STREAM_BLOCK_MS.
    commandTimeout: subscriber ? undefined : role === 'stream' ? STREAM_BLOCK_MS + 5000 : 5000,
    connectTimeout: 5000,
    // Reconnect quickly at first, then every half second; never give up. A
    // node whose subscription is back late must catch up from history, so
    // sooner is cheaper.
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 4), 500),
  };
  let client: Redis;
  switch (t.kind) {
    case 'single':
      client = new IORedis(t.url.toString(), options);
      break;
    case 'sentinel':
      client = new IORedis({
        ...options,
        sentinels: t.sentinels.map((a) => ({ host: a.host, port: a.port })),
        name: t.name,
        username: t.username,
        password: t.password,
        sentinelPassword: t.sentinelPassword,
        // Without it a connection only moves when the old master drops it;
        // a master that stays up but was demoted would keep it.
        failoverDetector: true,
        sentinelRetryStrategy: (times) => Math.min(100 * times, 1000),
        // A demoted master answers writes with READONLY: ask the sentinels again.
        reconnectOnError: (err) => err.message.startsWith('READONLY'),
      });
      break;
    case 'cluster': {
      const clusterOptions: ClusterOptions = {
        redisOptions: {
          connectionName: options.connectionName,
          username: t.username,
          password: t.password,
          connectTimeout: options.connectTimeout,
          commandTimeout: options.commandTimeout,
          maxRetriesPerRequest: options.maxRetriesPerRequest,
          autoResendUnfulfilledCommands: subscriber,
        },
        enableOfflineQueue: subscriber,
        enableReadyCheck: true,
        // Classic SUBSCRIBE (the raw ingest channels) is cluster-wide and goes to one node of it.
        shardedSubscribers: subscriber && role !== 'ingest',
        clusterRetryStrategy: (times) => Math.min(100 * times, 1000),
        // A command may be retried on MOVED, ASK, TRYAGAIN and CLUSTERDOWN only:
        // none of them ran, so retrying cannot apply a publish twice.
        retryDelayOnFailover: 200,
        retryDelayOnClusterDown: 200,
        retryDelayOnTryAgain: 100,
        slotsRefreshTimeout: 2000,
      };
      client = new Cluster(
        t.nodes.map((a) => ({ host: a.host, port: a.port })),
        clusterOptions,
      );
      break;
    }
    default:
      throw new Error(`unknown Redis target: ${(t as { kind: string }).kind}`);
  }
  let down = false;
  client.on('error', (err: Error) => {
    if (!down) log.warn({ err: err.message, role }, 'redis connection error');
    down = true;
  });
  client.on('ready', () => {
    if (down) log.info({ role }, 'redis connection restored');
    down = false;
  });
  return client;
}

export function isReady(client: Redis): boolean {
  return client.status === 'ready';
}

export function isCluster(client: Redis): client is Cluster {
  return client instanceof Cluster;
}

/** Counts every pub/sub message a connection receives, whatever the channel or kind. */
export function countMessages(client: Redis, onMessage: () => void): void {
  // The *Buffer events fire for every message whether or not anyone listens
  // to the string ones, so listening here costs no extra decoding.
  for (const event of ['messageBuffer', 'pmessageBuffer', 'smessageBuffer']) client.on(event, onMessage);
}
