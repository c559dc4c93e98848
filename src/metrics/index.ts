import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

// Every metric the relay exports, in one place. Names follow
// pushrelay_<subsystem>_<name>_<unit>; each app instance has its own registry
// so several nodes can run in one test process.

/** Gauges read at scrape time from the app; set once the app exists. */
export interface Probes {
  socketsByTransport?: () => Record<string, number>;
  redisReady?: () => Record<string, boolean>;
}

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const probes: Probes = {};

  const m = {
    registry,
    probes,
    socketConnections: new Gauge({
      name: 'pushrelay_socket_connections',
      help: 'Sockets connected to this node, by transport',
      labelNames: ['transport'] as const,
      registers: [registry],
      collect() {
        for (const [transport, n] of Object.entries(probes.socketsByTransport?.() ?? {}))
          this.set({ transport }, n);
      },
    }),
    socketConnects: new Counter({
      name: 'pushrelay_socket_connects_total',
      help: 'Socket connections accepted, and refused by reason',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    socketDisconnects: new Counter({
      name: 'pushrelay_socket_disconnects_total',
      help: 'Sockets that left this node, by reason: the relay’s own (draining, token_expired, kicked, resync, ...) when it ended the socket, else Socket.IO’s (transport close, ping timeout, ...)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    socketEvents: new Counter({
      name: 'pushrelay_socket_events_total',
      help: 'Client requests (subscribe, unsubscribe, publish, refresh), by outcome',
      labelNames: ['event', 'outcome'] as const,
      registers: [registry],
    }),
    publishes: new Counter({
      name: 'pushrelay_publish_messages_total',
      help: 'Publishes handled by this node, by source (http, batch, legacy, redis, socket) and outcome (ok, duplicate or an error code)',
      labelNames: ['source', 'outcome'] as const,
      registers: [registry],
    }),
    publishDuration: new Histogram({
      name: 'pushrelay_publish_duration_seconds',
      help: 'Time from accepting a publish to handing it to Redis (cluster) or the local sockets (standalone)',
      labelNames: ['source'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [registry],
    }),
    deliveries: new Counter({
      name: 'pushrelay_delivery_messages_total',
      help: 'Messages written to sockets on this node (one per socket reached)',
      registers: [registry],
    }),
    deliveryLatency: new Histogram({
      name: 'pushrelay_delivery_latency_seconds',
      help: 'End-to-end time from the publish being accepted (on any node) to its delivery on this node',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    deliveryDuplicates: new Counter({
      name: 'pushrelay_delivery_duplicates_dropped_total',
      help: 'Deliveries dropped because this node had already delivered that offset',
      registers: [registry],
    }),
    deliveryRecovered: new Counter({
      name: 'pushrelay_delivery_recovered_total',
      help: 'Messages replayed from history: to a recovering client (client) or to fill a gap on this node (gap)',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    deliveryGapsLost: new Counter({
      name: 'pushrelay_delivery_unrecoverable_gaps_total',
      help: 'Gaps this node could not fill from history; the channel’s sockets were told to reconnect and recover',
      registers: [registry],
    }),
    slowConsumers: new Counter({
      name: 'pushrelay_socket_slow_consumers_total',
      help: 'Sockets disconnected because their outgoing buffer passed PUSHRELAY_SOCKET_BUFFER_BYTES',
      registers: [registry],
    }),
    webhookCalls: new Counter({
      name: 'pushrelay_webhook_calls_total',
      help: 'Offline webhook calls, by outcome (ok, retry, failed, dropped)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    presenceEvents: new Counter({
      name: 'pushrelay_presence_events_total',
      help: 'Presence transitions this node produced (each is produced by one node of the cluster), by type: user.online, user.offline, channel.occupied, channel.vacated, member.added, member.removed',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    presenceInfoDropped: new Counter({
      name: 'pushrelay_presence_user_info_dropped_total',
      help: 'Presence members kept without their user_info because it was larger than PUSHRELAY_MAX_USER_INFO_BYTES',
      registers: [registry],
    }),
    redisConnected: new Gauge({
      name: 'pushrelay_redis_connected',
      help: '1 when the Redis connection of this role is ready (cluster mode)',
      labelNames: ['role'] as const,
      registers: [registry],
      collect() {
        for (const [role, up] of Object.entries(probes.redisReady?.() ?? {})) this.set({ role }, up ? 1 : 0);
      },
    }),
    redisMessages: new Counter({
      name: 'pushrelay_redis_messages_received_total',
      help: 'Pub/sub messages this node received from Redis, by connection role: deliveries and ingest (subscriber), Socket.IO adapter traffic (adapter). Grows with the traffic for this node’s own sockets, not with the number of nodes',
      labelNames: ['role'] as const,
      registers: [registry],
    }),
    ingestLag: new Histogram({
      name: 'pushrelay_ingest_lag_seconds',
      help: 'Time from a publish being accepted (on any node) to this node receiving it from the broker, before ordering and delivery: how far this node’s Redis subscription runs behind the publish stream',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    ingestMalformed: new Counter({
      name: 'pushrelay_ingest_malformed_total',
      help: 'Messages on the Redis ingest channel that were refused, by error code',
      labelNames: ['code'] as const,
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'pushrelay_ratelimit_rejections_total',
      help: 'Requests refused by a rate limit, by scope (publisher, socket, connection)',
      labelNames: ['scope'] as const,
      registers: [registry],
    }),
    httpErrors: new Counter({
      name: 'pushrelay_http_errors_total',
      help: 'HTTP error answers, by code',
      labelNames: ['code'] as const,
      registers: [registry],
    }),
    drainRemaining: new Gauge({
      name: 'pushrelay_drain_sockets_remaining',
      help: 'While draining, sockets this node has yet to disconnect',
      registers: [registry],
    }),
    drainActive: new Gauge({
      name: 'pushrelay_drain_active',
      help: '1 from SIGTERM (or drain()) until the node closes; readiness is 503 meanwhile',
      registers: [registry],
    }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;

/** A counter's total over the label sets `match` accepts (all of them by default). */
export async function counterTotal(
  counter: Counter<string>,
  match: (labels: Partial<Record<string, string | number>>) => boolean = () => true,
): Promise<number> {
  const { values } = await counter.get();
  return values.reduce((sum, v) => (match(v.labels) ? sum + v.value : sum), 0);
}
