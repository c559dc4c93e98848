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
export interface RedisLimits {
  /**
   * Deadline for an answer, in ms: a command not answered in time fails, and
   * a connection whose PING is not answered in time counts as not ready (and,
   * for command connections, fails new commands at once) until Redis answers
   * again. A hung Redis keeps its sockets open, so nothing else would notice.
   * Unset: the built-in command timeouts and no watchdog.
   */
  readonly timeoutMs?: number;
  /** Longest a command may legitimately block the connection (Redis `WAIT`), added to the deadlines. */
  readonly blockingMs?: number;
}

export function createRedis(
  target: RedisTarget | URL,
  role: RedisRole,
  log: Logger,
  limits: RedisLimits = {},
): Redis {
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
    commandTimeout: subscriber
      ? undefined
      : role === 'stream'
        ? STREAM_BLOCK_MS + 5000
        : (limits.timeoutMs ?? 5000) + (limits.blockingMs ?? 0),
    connectTimeout: 5000,
    retryStrategy: reconnectDelay,
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
  if (t.kind !== 'cluster') keepConnecting(client, role, log);
  let down = false;
  client.on('error', (err: Error) => {
    if (!down) log.warn({ err: err.message, role }, 'redis connection error');
    down = true;
  });
  client.on('ready', () => {
    if (down) log.info({ role }, 'redis connection restored');
    down = false;
  });
  if (subscriber) {
    onReset(client, () =>
      log.warn(
        { role },
        role === 'subscriber'
          ? 'Redis closed the delivery subscriber connection (pub/sub output-buffer limit, CLIENT KILL, restart): resubscribing, and channels catch up from history'
          : 'Redis closed a subscriber connection (pub/sub output-buffer limit, CLIENT KILL, restart): resubscribing; what was published on it meanwhile is lost',
      ),
    );
  }
  // A 'stream' connection blocks in XREADGROUP, where a PING would wait its turn.
  if (limits.timeoutMs !== undefined && role !== 'stream' && !(subscriber && isCluster(client))) {
    watch(client, role, limits.timeoutMs + (limits.blockingMs ?? 0), !subscriber, log);
  }
  return client;
}

/**
 * Reconnect quickly at first, then every half second; never give up. A node
 * whose subscription is back late must catch up from history, so sooner is
 * cheaper. ioredis's own reconnects and keepConnecting() both wait this long.
 */
function reconnectDelay(attempt: number): number {
  return Math.min(50 * 2 ** Math.min(attempt, 4), 500);
}

/** Connections this process closed (`quit`, or `disconnect` without reconnecting): the only ones left ended. */
const closedOnPurpose = new WeakSet<Redis>();

/** Whether an ended connection stays ended: ours closed on purpose, or a Cluster's (not kept connecting). */
function endedForGood(client: Redis): boolean {
  return closedOnPurpose.has(client) || isCluster(client);
}

/**
 * ioredis gives up on a connection for good (status `end`) when its connector
 * fails instead of the connection: with Sentinel, a `+switch-master` notice
 * (the failover detector) that arrives while a reconnect is still asking the
 * sentinels for the master makes that attempt throw "Connection is closed",
 * and the client never tries again. A command connection then answers 503
 * and a subscriber misses every message until the process restarts. Such an
 * end is undone here: the client connects again (a subscriber resubscribes its
 * channels and the broker catches up from history, as after any reconnect),
 * retrying with backoff while that fails too. Only our own `quit` and
 * `disconnect` leave a connection ended.
 */
function keepConnecting(client: Redis, role: RedisRole, log: Logger): void {
  const quit = client.quit.bind(client) as (...args: unknown[]) => unknown;
  const disconnect = client.disconnect.bind(client);
  (client as unknown as { quit: (...args: unknown[]) => unknown }).quit = (...args) => {
    closedOnPurpose.add(client);
    return quit(...args);
  };
  client.disconnect = (reconnect = false) => {
    if (!reconnect) closedOnPurpose.add(client);
    disconnect(reconnect);
  };
  let attempts = 0;
  client.on('ready', () => {
    attempts = 0;
  });
  client.on('end', () => {
    if (closedOnPurpose.has(client)) return;
    const delayMs = reconnectDelay(++attempts);
    log.warn(
      { role, delayMs },
      'the Redis client gave up on a connection (a failover notice during a reconnect); connecting again',
    );
    setTimeout(() => {
      if (closedOnPurpose.has(client) || client.status !== 'end') return;
      // A failure ends it again, and this runs again.
      client.connect().catch(() => {});
    }, delayMs).unref();
  });
}

/** Connections whose last PING went unanswered past its deadline. */
const stalled = new WeakSet<Redis>();
/** How often a connection is PINGed, in ms: a stall is noticed within this plus the deadline. */
const PING_EVERY_MS = 500;

/**
 * PINGs a connection and marks it stalled while a PING goes unanswered past
 * `deadlineMs`. A command connection then fails new commands at once with
 * the same error as a closed one (so a publish answers 503 immediately rather
 * than after its own timeout); its watchdog PING still goes through, and the
 * first answer clears the mark.
 */
function watch(client: Redis, role: RedisRole, deadlineMs: number, failFast: boolean, log: Logger): void {
  let pending = false;
  let deadline: NodeJS.Timeout | undefined;
  const clear = () => {
    pending = false;
    if (deadline) clearTimeout(deadline);
    deadline = undefined;
    if (stalled.delete(client)) log.info({ role }, 'redis answers again');
  };
  const stall = () => {
    if (stalled.has(client)) return;
    stalled.add(client);
    log.warn({ role, deadlineMs }, 'redis is not answering; counting it as unavailable');
  };
  const tick = () => {
    if (pending || client.status !== 'ready') return;
    pending = true;
    deadline = setTimeout(() => {
      if (pending) stall();
    }, deadlineMs);
    deadline.unref();
    client.ping().then(clear, () => {
      // Rejected: the connection closed (its own status says so now) or the command timed out.
      pending = false;
      if (deadline) clearTimeout(deadline);
      deadline = undefined;
    });
  };
  const timer = setInterval(tick, Math.min(PING_EVERY_MS, deadlineMs));
  timer.unref();
  client.on('ready', clear);
  client.on('end', () => {
    // An end keepConnecting() undoes keeps the watch: the connection comes back.
    if (!endedForGood(client)) return;
    clearInterval(timer);
    if (deadline) clearTimeout(deadline);
  });
  if (failFast) {
    const original = client.sendCommand.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { sendCommand: (...args: unknown[]) => unknown }).sendCommand = (...args) => {
      const command = args[0] as { name: string; reject(err: Error): void; promise: Promise<unknown> };
      if (stalled.has(client) && command.name !== 'ping') {
        command.reject(new Error('Redis is not answering (watchdog)'));
        return command.promise;
      }
      const sent = original(...args);
      // A command that timed out is as good a sign as an unanswered PING: the
      // next command fails at once instead of waiting out its own deadline.
      command.promise.catch((err: Error) => {
        if (err.message === 'Command timed out') stall();
      });
      return sent;
    };
  }
}

export function isReady(client: Redis): boolean {
  return client.status === 'ready' && !stalled.has(client);
}

export function isCluster(client: Redis): client is Cluster {
  return client instanceof Cluster;
}

/**
 * Calls `fn` once each time a connection that was up goes down (Redis closed
 * it, or it broke), not on every failed reconnect attempt after. For a
 * subscriber this is when pub/sub messages start being missed.
 */
export function onReset(client: Redis, fn: () => void): void {
  let up = client.status === 'ready';
  client.on('ready', () => {
    up = true;
  });
  // 'reconnecting', not 'close': quitting at shutdown is no reset.
  client.on('reconnecting', () => {
    if (!up) return;
    up = false;
    fn();
  });
}

/** Counts every pub/sub message a connection receives, whatever the channel or kind. */
export function countMessages(client: Redis, onMessage: () => void): void {
  // The *Buffer events fire for every message whether or not anyone listens
  // to the string ones, so listening here costs no extra decoding.
  for (const event of ['messageBuffer', 'pmessageBuffer', 'smessageBuffer']) client.on(event, onMessage);
}
