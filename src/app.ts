import rateLimit from '@fastify/rate-limit';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { createShardedAdapter } from '@socket.io/redis-adapter';
import Fastify, { LogController } from 'fastify';
import { type Logger, pino } from 'pino';
import { createBroker, dropReporter } from './broker/index.js';
import type { Config } from './config/index.js';
import { type ErrorCode, RelayError } from './errors.js';
import { registerAdminRoutes } from './http/admin.js';
import { registerWebhookAdminRoutes, type WebhookAdmin } from './http/admin-webhooks.js';
import { registerAssetRoutes } from './http/assets.js';
import { registerPublisherAuth } from './http/auth.js';
import { registerBodyParsers } from './http/body.js';
import { registerEchoRoutes } from './http/echo.js';
import { registerErrorHandlers } from './http/errors.js';
import { installFastPath } from './http/fast.js';
import { registerHealthRoutes } from './http/health.js';
import { registerHistoryRoutes } from './http/history.js';
import { registerIngestDeadRoutes } from './http/ingest-dead.js';
import { registerLegacyRoutes } from './http/legacy.js';
import { registerNodeRoutes } from './http/nodes.js';
import { MemoryNonceStore, RedisNonceStore } from './http/nonces.js';
import { registerPresenceRoutes } from './http/presence.js';
import { registerPublishRoutes } from './http/publish.js';
import { rateStores } from './http/ratelimit.js';
import { registerStatsRoutes } from './http/stats.js';
import { registerTailRoutes } from './http/tail.js';
import { applyServerTimeouts, clientErrorHandler } from './http/timeouts.js';
import type { HttpApp } from './http/types.js';
import { registerWebhookRoutes } from './http/webhooks.js';
import { Ingest } from './ingest/ingest.js';
import { listsMembers, USER_NAMESPACE } from './ingest/message.js';
import { MemoryResultStore, RedisResultStore } from './ingest/results.js';
import { compile } from './ingest/schema.js';
import { type Sources, wireSources } from './ingest/sources/index.js';
import { counterTotal, createMetrics, type Metrics } from './metrics/index.js';
import { Sampler } from './metrics/samples.js';
import { createPresence, type LocalMembership, presenceChannels } from './presence/index.js';
import { Admission } from './realtime/admission.js';
import { SlowConsumerWatch } from './realtime/backpressure.js';
import { UserControl } from './realtime/control.js';
import type { RelayServer } from './realtime/events.js';
import { disconnect, Hub, memberOf } from './realtime/hub.js';
import { EchoFrontEnd } from './realtime/protocols/echo/index.js';
import { attachRealtime, createSocketServer } from './realtime/server.js';
import { createTokenVerifier } from './realtime/tokens.js';
import { countMessages, createRedis, isReady, onReset, type Redis } from './redis/client.js';
import { redisNames } from './redis/keys.js';
import { consoleWebhookAdmin } from './webhooks/console.js';
import { wireWebhooks } from './webhooks/index.js';

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
 * A drain with no sockets left ends once HTTP has been idle this long (ms):
 * long enough to tell a publisher between two requests from one that moved
 * to another node, far shorter than a drain period.
 */
const DRAIN_HTTP_QUIET_MS = 1000;

/**
 * Builds a relay node from its configuration: Fastify and Socket.IO on one
 * HTTP server, the broker, presence and idempotency stores of its mode, and
 * every route. Never listens: main.ts and the tests do.
 */
export async function buildApp(
  config: Config,
  options: {
    logger?: Logger;
    /** The webhook queue's operator side; without it the console shows "webhooks not configured". */
    webhookAdmin?: WebhookAdmin;
  } = {},
): Promise<Relay> {
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
    // Set on the server again below (applyServerTimeouts); given here so Fastify does not reset them to 0.
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    clientErrorHandler: clientErrorHandler(metrics),
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
  applyServerTimeouts(http.server, config);

  let redis: RedisConnections | undefined;
  if (config.redis) {
    // A hung Redis is noticed within PUSHRELAY_REDIS_TIMEOUT_MS (and a
    // publish fails at once after that); WAIT may block the command connection longer.
    const limits = { timeoutMs: config.redisTimeoutMs };
    redis = {
      command: createRedis(config.redis, 'command', log, {
        ...limits,
        blockingMs: config.redisWaitReplicas > 0 ? config.redisWaitMs : 0,
      }),
      subscriber: createRedis(config.redis, 'subscriber', log, limits),
      adapterSubscriber: createRedis(config.redis, 'adapter-sub', log, limits),
      ingestSubscriber: createRedis(config.redis, 'ingest', log, limits),
    };
    onReset(redis.subscriber, () => metrics.redisSubscriberResets.inc({ role: 'subscriber' }));
    onReset(redis.adapterSubscriber, () => metrics.redisSubscriberResets.inc({ role: 'adapter' }));
    onReset(redis.ingestSubscriber, () => metrics.redisSubscriberResets.inc({ role: 'ingest' }));
    countMessages(redis.subscriber, () => metrics.redisMessages.inc({ role: 'subscriber' }));
    countMessages(redis.adapterSubscriber, () => metrics.redisMessages.inc({ role: 'adapter' }));
    const ingestMessages = metrics.redisMessages.labels({ role: 'ingest' });
    countMessages(redis.ingestSubscriber, () => ingestMessages.inc());
  }

  let draining = false;
  /** A socket could not be set up without Redis: answer it now rather than leave its handshake hanging. */
  const redisDown = () => redis !== undefined && !(isReady(redis.command) && isReady(redis.subscriber));
  // Slots go to authenticated sockets only; what a handshake may do before is bounded per address.
  const admission = new Admission(() => io, config, metrics, { draining: () => draining, redisDown });
  const io: RelayServer = createSocketServer(http.server, config, (req) => admission.handshake(req), metrics);
  admission.watch(io);
  metrics.probes.pendingHandshakes = () => admission.pendingCount();
  metrics.probes.echoAddresses = () => admission.echoAddressCount();
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
    connections: () => nsp.sockets.size,
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
  const webhooks = wireWebhooks({
    config,
    metrics,
    log,
    redis: redis ? { command: redis.command, names } : undefined,
  });
  const presence = redis
    ? createPresence({
        kind: 'redis',
        ...presenceOptions,
        webhooks: webhooks?.presence,
        redis: redis.command,
        names,
        ttlSeconds: config.presenceTtl,
      })
    : createPresence({ kind: 'memory', ...presenceOptions });
  presence.onEvent((event) => metrics.presenceEvents.inc({ type: event.type }));
  const dropped = dropReporter(metrics, log);
  webhooks?.attach(presence);
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

  const ingest = new Ingest({
    broker,
    presence,
    results,
    metrics,
    maxPayloadBytes: config.maxPayloadBytes,
    onOffline: webhooks ? (users, publication) => webhooks.undelivered(users, publication) : undefined,
  });
  const slowConsumers = new SlowConsumerWatch(io, config.socketBufferBytes, metrics, log);
  const hub = new Hub(io, broker, presence, metrics, log, dropped, slowConsumers.noteBacklog);
  hub.replayLimit = (channel) => Math.max(1, config.namespace(channel).historySize);
  if (redis) hub.setupTimeoutMs = config.redisTimeoutMs;
  hub.retentionTtl = (channel) => config.namespace(channel).historyTtl;

  hub.echo = config.echo;
  const echo = config.echo ? new EchoFrontEnd({ io, config, hub, presence, metrics, log }) : undefined;
  attachRealtime(io, {
    config,
    hub,
    ingest,
    verify: createTokenVerifier(config),
    metrics,
    log,
    echo,
    admit: (socket) => admission.socket(socket),
  });

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
    if (redisDown()) return 'unavailable';
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
  registerWebhookRoutes(http, webhooks?.admin);
  registerEchoRoutes(http, {
    clients: config.echoClients,
    ingest,
    presence,
    io,
    cluster: redis !== undefined,
    maxJsonDepth: config.maxJsonDepth,
  });
  const sampler = wireConsoleRoutes(http, {
    config,
    presence,
    metrics,
    log,
    names,
    command: redis?.command,
    sockets: () => nsp.sockets.size,
    draining: () => draining,
    webhookAdmin: options.webhookAdmin ?? (webhooks ? consoleWebhookAdmin(webhooks.admin) : undefined),
    // Sampled every few seconds: the queue's own depth, not the console view (which reads dead letters).
    webhookQueue: webhooks
      ? async () => {
          const s = await webhooks.admin.stats();
          return Object.values(s.endpoints).reduce((n, e) => n + e.depth, 0);
        }
      : undefined,
  });
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
  webhooks?.start();
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
        ...(config.generated.file ? { file: config.generated.file } : {}),
      },
      config.generated.file
        ? `development mode: no PUSHRELAY_KEYS / PUSHRELAY_JWT_SECRET set, so these are used, kept in ${config.generated.file} for every development node started in this directory (standalone or with REDIS_URL); set them (and NODE_ENV=production) for real use`
        : 'development mode: no PUSHRELAY_KEYS / PUSHRELAY_JWT_SECRET set, so these were generated for this run only; set them (and NODE_ENV=production) for real use',
    );
  }
  log.info({ mode: config.mode, node: config.nodeId }, `pushrelay ${config.mode} node built`);

  // HTTP requests in flight and when the last one ended, so a drain with no
  // sockets ends once publishers stopped coming rather than after the whole period.
  let httpInFlight = 0;
  let httpLastEnded = Date.now();
  http.server.on('request', (_req, res) => {
    httpInFlight++;
    res.once('close', () => {
      httpInFlight--;
      httpLastEnded = Date.now();
    });
  });
  const idle = () =>
    io.engine.clientsCount === 0 && httpInFlight === 0 && Date.now() - httpLastEnded >= DRAIN_HTTP_QUIET_MS;

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
        // Sockets that all left by themselves leave nothing to spread out.
        for (let i = 0; i < rounds && sockets.length > 0 && io.engine.clientsCount > 0; i++) {
          // Cumulative quota, so a few sockets are spread over the whole period rather than its first rounds.
          const due = Math.ceil((total * (i + 1)) / rounds) - (total - sockets.length);
          for (const socket of sockets.splice(0, due)) if (socket.connected) disconnect(socket, 'draining');
          metrics.drainRemaining.set(sockets.length);
          const next = started + ((i + 1) * ms) / rounds;
          await sleep(Math.max(0, next - Date.now()));
        }
        for (const socket of sockets) if (socket.connected) disconnect(socket, 'draining');
        metrics.drainRemaining.set(0);
        // Publishers are still being routed here until the balancer sees /readyz
        // fail; keep serving them, but a node nobody uses any more stops now.
        while (Date.now() < started + ms && !idle()) await sleep(Math.min(100, started + ms - Date.now()));
        log.info({ seconds: (Date.now() - started) / 1000 }, 'drained');
      })();
      return drained;
    },
    close() {
      closed ??= (async () => {
        draining = true;
        hub.close();
        sampler.stop();
        slowConsumers.stop();
        webhooks?.close();
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

/** The console's data: per-node samples for the charts, and the dead letters of the ingest stream and webhooks. */
function wireConsoleRoutes(
  http: HttpApp,
  deps: {
    config: Config;
    presence: Parameters<typeof registerStatsRoutes>[1]['presence'];
    metrics: Metrics;
    log: Logger;
    names: ReturnType<typeof redisNames>;
    command: Redis | undefined;
    sockets: () => number;
    draining: () => boolean;
    webhookAdmin: WebhookAdmin | undefined;
    /** Deliveries waiting or retrying; defaults to the console view's queued + retrying. */
    webhookQueue: (() => Promise<number>) | undefined;
  },
): Sampler {
  const { config, metrics, log, names, command, webhookAdmin } = deps;
  const intervalMs = config.statsIntervalSeconds * 1000;
  const sampler = new Sampler({
    metrics,
    intervalMs,
    nodeId: config.nodeId,
    sockets: deps.sockets,
    draining: deps.draining,
    webhookQueue:
      deps.webhookQueue ??
      (webhookAdmin
        ? async () => {
            const s = await webhookAdmin.stats();
            return s.queued + s.retrying;
          }
        : undefined),
    redis: command ? { command, key: names.stats(config.nodeId) } : undefined,
    log,
  });
  sampler.start();
  const redis = command ? { command, names } : undefined;
  registerStatsRoutes(http, {
    presence: deps.presence,
    sampler,
    nodeId: config.nodeId,
    mode: config.mode,
    intervalMs,
    redis,
  });
  registerIngestDeadRoutes(http, {
    redis,
    streams: {
      stream: { stream: names.ingest, field: 'body' },
      ...(config.anycable ? { anycable: { stream: config.anycableChannel, field: 'payload' } } : {}),
    },
    metrics,
    log,
  });
  registerWebhookAdminRoutes(http, { admin: webhookAdmin, metrics, log });
  return sampler;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
