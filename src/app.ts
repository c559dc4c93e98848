import rateLimit from '@fastify/rate-limit';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { createShardedAdapter } from '@socket.io/redis-adapter';
import Fastify, { LogController } from 'fastify';
import { type Logger, pino } from 'pino';
import { createBroker, dropReporter } from './broker/index.js';
import type { Config } from './config/index.js';
import { type ErrorCode, RelayError } from './errors.js';
import { registerAdminRoutes } from './http/admin.js';
import { registerAssetRoutes } from './http/assets.js';
import { registerPublisherAuth } from './http/auth.js';
import { registerBodyParsers } from './http/body.js';
import { registerErrorHandlers } from './http/errors.js';
import { installFastPath } from './http/fast.js';
import { registerHealthRoutes } from './http/health.js';
import { registerHistoryRoutes } from './http/history.js';
import { registerLegacyRoutes } from './http/legacy.js';
import { registerNodeRoutes } from './http/nodes.js';
import { MemoryNonceStore, RedisNonceStore } from './http/nonces.js';
import { registerPresenceRoutes } from './http/presence.js';
import { registerPublishRoutes } from './http/publish.js';
import { rateStores } from './http/ratelimit.js';
import { registerTailRoutes } from './http/tail.js';
import type { HttpApp } from './http/types.js';
import { Ingest } from './ingest/ingest.js';
import { listsMembers, USER_NAMESPACE } from './ingest/message.js';
import { OfflineWebhook } from './ingest/offline-webhook.js';
import { MemoryResultStore, RedisResultStore } from './ingest/results.js';
import { compile } from './ingest/schema.js';
import { type Sources, wireSources } from './ingest/sources/index.js';
import { counterTotal, createMetrics, type Metrics } from './metrics/index.js';
import { createPresence, type LocalMembership, presenceChannels } from './presence/index.js';
import { watchSlowConsumers } from './realtime/backpressure.js';
import { UserControl } from './realtime/control.js';
import type { RelayServer } from './realtime/events.js';
import { disconnect, Hub, memberOf } from './realtime/hub.js';
import { fullBucket, take } from './realtime/limits.js';
import { attachRealtime, createSocketServer, originAllowed } from './realtime/server.js';
import { createTokenVerifier } from './realtime/tokens.js';
import { countMessages, createRedis, isReady, type Redis } from './redis/client.js';
import { redisNames } from './redis/keys.js';

export interface Relay {
  readonly config: Config;
  readonly http: HttpApp;
  readonly io: RelayServer;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Redis pub/sub, the ingest stream, ActionCable, AnyCable. */
  readonly sources: Sources;
  /**
   * Stops admitting sockets, turns readiness to 503, and disconnects the
   * sockets in batches spread over PUSHRELAY_DRAIN_SECONDS, telling them to
   * reconnect elsewhere at once. HTTP keeps serving until it resolves.
   */
  drain(): Promise<void>;
  /** Closes sockets, HTTP and Redis. */
  close(): Promise<void>;
}

interface RedisConnections {
  readonly command: Redis;
  readonly subscriber: Redis;
  readonly adapterSubscriber: Redis;
  /** Raw ingest channels and patterns (every node receives every raw message). */
  readonly ingestSubscriber: Redis;
}

/** Batches a drain is split into per second; small batches keep the next node's reconnect load even. */
const DRAIN_BATCHES_PER_SECOND = 10;

/**
 * Builds a relay node from its configuration: Fastify and Socket.IO on one
 * HTTP server, the broker, presence and idempotency stores of its mode, and
 * every route. Never listens: main.ts and the tests do.
 */
export async function buildApp(config: Config, options: { logger?: Logger } = {}): Promise<Relay> {
  const log = options.logger ?? pino({ level: config.logLevel, base: { node: config.nodeId } });
  const metrics = createMetrics();
  const names = redisNames(config.prefix);

  const http = Fastify({
    loggerInstance: log,
    bodyLimit: config.maxPayloadBytes,
    // One line per request would drown the logs of a relay taking thousands of publishes a second.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: false,
    // close() comes after the drain gave in-flight requests the whole drain
    // period: whatever is still open then is closed, so shutdown cannot hang.
    forceCloseConnections: true,
    routerOptions: { maxParamLength: 512 },
    // Only addresses the operator trusts may claim a client address in X-Forwarded-For.
    trustProxy:
      typeof config.trustProxy === 'number'
        ? (
            (hops: number) => (_address: string, hop: number) =>
              hop < hops
          )(config.trustProxy)
        : config.trustProxy,
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as HttpApp;
  http.setValidatorCompiler(({ schema }) => compile(schema));

  let redis: RedisConnections | undefined;
  if (config.redis) {
    redis = {
      command: createRedis(config.redis, 'command', log),
      subscriber: createRedis(config.redis, 'subscriber', log),
      adapterSubscriber: createRedis(config.redis, 'adapter-sub', log),
      ingestSubscriber: createRedis(config.redis, 'ingest', log),
    };
    countMessages(redis.subscriber, () => metrics.redisMessages.inc({ role: 'subscriber' }));
    countMessages(redis.adapterSubscriber, () => metrics.redisMessages.inc({ role: 'adapter' }));
    const ingestMessages = metrics.redisMessages.labels({ role: 'ingest' });
    countMessages(redis.ingestSubscriber, () => ingestMessages.inc());
  }

  let draining = false;
  const handshakes = fullBucket(config.connectRate);
  const io: RelayServer = createSocketServer(
    http.server,
    config,
    (req) => {
      if (draining) return 'draining';
      if (!originAllowed(config, req.headers.origin)) return 'origin_not_allowed';
      // Admission keeps a reconnect storm (a node drained or lost) from toppling the
      // survivors: refused handshakes are retried by socket.io-client with backoff.
      if (io.engine.clientsCount >= config.maxConnections) return 'over_capacity';
      if (!take(handshakes, config.connectRate, config.connectRate)) {
        metrics.rateLimited.inc({ scope: 'connection' });
        return 'rate_limited';
      }
      return undefined;
    },
    metrics,
  );
  // Sharded pub/sub with a Redis channel per room ('dynamic'): a room's
  // broadcasts (presence notices) reach only the nodes with sockets in it, and
  // no node holds a pattern subscription that every publish is matched against.
  if (redis) {
    // The adapter does not handle a failed SSUBSCRIBE, and a Redis Cluster
    // that reaches no node rejects what it queued: keep that from becoming an
    // unhandled rejection (it resubscribes once the cluster is back).
    const sub = redis.adapterSubscriber;
    for (const name of ['ssubscribe', 'sunsubscribe'] as const) {
      const original = sub[name].bind(sub) as (...channels: string[]) => Promise<unknown>;
      (sub as unknown as Record<string, unknown>)[name] = (...channels: string[]) =>
        original(...channels).catch((err: Error) =>
          log.debug({ err: err.message }, `adapter ${name} failed`),
        );
    }
    io.adapter(
      createShardedAdapter(redis.command, redis.adapterSubscriber, {
        channelPrefix: names.adapter,
        subscriptionMode: 'dynamic',
      }),
    );
  }
  const nsp = io.of('/');

  const local: LocalMembership = {
    stats: () => {
      let users = 0;
      for (const room of nsp.adapter.rooms.keys()) if (room.startsWith(`${USER_NAMESPACE}:`)) users++;
      return { sockets: nsp.sockets.size, users };
    },
    sockets: (channel) => nsp.adapter.rooms.get(channel)?.size ?? 0,
    has: (channel, socketId) => nsp.adapter.rooms.get(channel)?.has(socketId) ?? false,
    *entries() {
      for (const [room, ids] of nsp.adapter.rooms) {
        if (!listsMembers(room)) continue;
        for (const id of ids) {
          if (id === room) continue;
          const socket = nsp.sockets.get(id);
          if (socket !== undefined) yield [room, id, memberOf(socket, room)] as const;
        }
      }
    },
    // Reported with the heartbeat so the console can show cluster-wide rates.
    counters: async () => ({
      connections: await counterTotal(metrics.socketConnects, (l) => l.outcome === 'ok'),
      publishes: await counterTotal(metrics.publishes, (l) => l.outcome === 'ok'),
      deliveries: await counterTotal(metrics.deliveries),
    }),
  };
  const retention = (channel: string) => {
    const ns = config.namespace(channel);
    return { size: ns.historySize, ttl: ns.historyTtl };
  };
  const idempotencyMs = config.idempotencySeconds * 1000;

  // The one rule for which channels announce their members (native notices, Echo, webhooks).
  const isPresenceChannel = presenceChannels((channel) => config.namespace(channel).presence);
  const presenceOptions = {
    nodeId: config.nodeId,
    local,
    isPresenceChannel,
    maxInfoBytes: config.maxUserInfoBytes,
    onInfoRefused: () => metrics.presenceInfoDropped.inc(),
    log,
  };
  const presence = redis
    ? createPresence({
        kind: 'redis',
        ...presenceOptions,
        redis: redis.command,
        names,
        ttlSeconds: config.presenceTtl,
      })
    : createPresence({ kind: 'memory', ...presenceOptions });
  presence.onEvent((event) => metrics.presenceEvents.inc({ type: event.type }));
  const dropped = dropReporter(metrics, log);
  const broker = redis
    ? createBroker({
        kind: 'redis',
        retention,
        idempotencyMs,
        command: redis.command,
        subscriber: redis.subscriber,
        names,
        log,
        durability: { replicas: config.redisWaitReplicas, timeoutMs: config.redisWaitMs },
        dropped,
      })
    : createBroker({ kind: 'memory', retention, idempotencyMs });
  const results = redis
    ? new RedisResultStore(redis.command, names, idempotencyMs)
    : new MemoryResultStore(idempotencyMs);
  const nonces = redis ? new RedisNonceStore(redis.command, names) : new MemoryNonceStore();

  const webhook =
    config.offlineWebhook && config.offlineWebhookSecret
      ? new OfflineWebhook(config.offlineWebhook, config.offlineWebhookSecret, config.nodeId, metrics, log)
      : undefined;
  const ingest = new Ingest({
    broker,
    presence,
    results,
    metrics,
    maxPayloadBytes: config.maxPayloadBytes,
    onOffline: webhook ? (users, publication) => webhook.notify(users, publication) : undefined,
  });
  const hub = new Hub(io, broker, presence, metrics, log, dropped);
  hub.replayLimit = (channel) => Math.max(1, config.namespace(channel).historySize);
  hub.retentionTtl = (channel) => config.namespace(channel).historyTtl;

  attachRealtime(io, { config, hub, ingest, verify: createTokenVerifier(config), metrics, log });
  const stopWatchingConsumers = watchSlowConsumers(io, config.socketBufferBytes, metrics, log);

  registerBodyParsers(http, config.maxJsonDepth);
  registerErrorHandlers(http, metrics, config.maxPayloadBytes);
  registerPublisherAuth(http, config.keys, nonces);
  const rateLimits = rateStores(redis?.command, names.rateLimit);
  if (config.rateLimit > 0) {
    await http.register(rateLimit, {
      global: false,
      max: config.rateLimit,
      timeWindow: 60_000,
      hook: 'preHandler',
      // Cluster-wide, with quota taken from Redis in slices rather than a round trip per request.
      store: rateLimits.ctor,
      // A Redis outage must not turn into 500s here; the publish itself answers 503.
      skipOnError: true,
      keyGenerator: (request) => (request.publisher ? `key:${request.publisher.name}` : `ip:${request.ip}`),
      onExceeded: () => metrics.rateLimited.inc({ scope: 'publisher' }),
      errorResponseBuilder: (_request, context) =>
        new RelayError(
          'rate_limited',
          `more than ${context.max} requests per minute with this key; retry in ${context.after}`,
          Math.max(1, Math.ceil(context.ttl / 1000)),
        ),
    });
  }

  const notReady = (): ErrorCode | undefined => {
    if (draining) return 'draining';
    if (redis && !(isReady(redis.command) && isReady(redis.subscriber))) return 'unavailable';
    return undefined;
  };
  registerPublishRoutes(http, ingest, config.maxJsonDepth);
  registerAdminRoutes(http, new UserControl(io, hub, redis !== undefined, config.maxChannels, log));
  registerPresenceRoutes(http, presence);
  registerHistoryRoutes(http, broker);
  registerLegacyRoutes(http, ingest, presence);
  registerHealthRoutes(http, { metrics, nodeId: config.nodeId, mode: config.mode, notReady });
  registerNodeRoutes(http, presence, { nodeId: config.nodeId, mode: config.mode });
  registerTailRoutes(http, config);
  registerAssetRoutes(http, { console: config.console });
  const redisTarget = config.redis;
  const sources = wireSources({
    config,
    http,
    ingest,
    metrics,
    log,
    names,
    redis:
      redis && redisTarget
        ? {
            command: redis.command,
            subscriber: redis.ingestSubscriber,
            connect: () => createRedis(redisTarget, 'stream', log),
          }
        : undefined,
  });
  await sources.start();

  metrics.probes.socketsByTransport = () => {
    const counts: Record<string, number> = { websocket: 0, polling: 0 };
    for (const socket of nsp.sockets.values()) {
      const t = socket.conn.transport.name;
      counts[t] = (counts[t] ?? 0) + 1;
    }
    return counts;
  };
  if (redis) {
    const r = redis;
    metrics.probes.redisReady = () => ({
      command: isReady(r.command),
      subscriber: isReady(r.subscriber),
      adapter: isReady(r.adapterSubscriber),
      ingest: isReady(r.ingestSubscriber),
    });
  }

  await http.ready();
  installFastPath(http.server, {
    keys: config.keys,
    ingest,
    metrics,
    log,
    maxPayloadBytes: config.maxPayloadBytes,
    maxJsonDepth: config.maxJsonDepth,
    rateLimit:
      config.rateLimit > 0
        ? {
            max: config.rateLimit,
            windowMs: 60_000,
            publish: rateLimits.forRoute('POST', '/v1/publish'),
            batch: rateLimits.forRoute('POST', '/v1/batch'),
            onExceeded: () => metrics.rateLimited.inc({ scope: 'publisher' }),
          }
        : undefined,
  });

  if (config.generated.key || config.generated.jwtSecret) {
    log.warn(
      {
        publisherKey: config.generated.key?.name,
        publisherSecret: config.generated.key?.secret,
        jwtSecret: config.generated.jwtSecret,
      },
      'development mode: no PUSHRELAY_KEYS / PUSHRELAY_JWT_SECRET set, so these were generated for this run only; set them (and NODE_ENV=production) for real use',
    );
  }
  log.info({ mode: config.mode, node: config.nodeId }, `pushrelay ${config.mode} node built`);

  let drained: Promise<void> | undefined;
  let closed: Promise<void> | undefined;

  const relay: Relay = {
    config,
    http,
    io,
    metrics,
    log,
    sources,
    drain() {
      drained ??= (async () => {
        draining = true;
        metrics.drainActive.set(1);
        // Stream partitions and the raw ingest share go to the other nodes at once.
        void sources.drain();
        const ms = config.drainSeconds * 1000;
        const sockets = [...nsp.sockets.values()];
        const total = sockets.length;
        const rounds = Math.max(1, Math.floor((ms / 1000) * DRAIN_BATCHES_PER_SECOND));
        log.info({ sockets: sockets.length, seconds: config.drainSeconds }, 'draining');
        metrics.drainRemaining.set(sockets.length);
        const started = Date.now();
        for (let i = 0; i < rounds && sockets.length > 0; i++) {
          // Cumulative quota, so a few sockets are spread over the whole period rather than its first rounds.
          const due = Math.ceil((total * (i + 1)) / rounds) - (total - sockets.length);
          for (const socket of sockets.splice(0, due)) if (socket.connected) disconnect(socket, 'draining');
          metrics.drainRemaining.set(sockets.length);
          const next = started + ((i + 1) * ms) / rounds;
          await sleep(Math.max(0, next - Date.now()));
        }
        for (const socket of sockets) if (socket.connected) disconnect(socket, 'draining');
        metrics.drainRemaining.set(0);
        // Publishers are still being routed here until the balancer sees /readyz fail; keep serving them.
        await sleep(Math.max(0, started + ms - Date.now()));
        log.info('drained');
      })();
      return drained;
    },
    close() {
      closed ??= (async () => {
        draining = true;
        hub.close();
        stopWatchingConsumers();
        webhook?.close();
        await sources.stop();
        for (const socket of nsp.sockets.values()) socket.disconnect(true);
        io.engine.close();
        await http.close();
        await presence.close();
        await broker.close();
        results.close();
        nonces.close();
        if (redis) {
          await Promise.resolve(nsp.adapter.close()).catch(() => {});
          // A subscriber connection that never reached Redis queues QUIT
          // forever: give it a moment, then cut it.
          await Promise.all(
            [redis.command, redis.subscriber, redis.adapterSubscriber, redis.ingestSubscriber].map((c) =>
              Promise.race([c.quit(), sleep(1000)])
                .catch(() => {})
                .finally(() => c.disconnect()),
            ),
          );
        }
      })();
      return closed;
    },
  };
  return relay;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
