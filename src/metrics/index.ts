import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

// Every metric the relay exports, in one place. Names follow
// pushrelay_<subsystem>_<name>_<unit>; each app instance has its own registry
// so several nodes can run in one test process.

/** Gauges read at scrape time from the app; set once the app exists. */
export interface Probes {
  socketsByTransport?: () => Record<string, number>;
  /** Latest webhook queue figures: per receiver label, and the whole cluster's bytes and dead letters. */
  webhooks?: () =>
    | {
        endpoints: Record<string, { depth: number; retrying: number }>;
        bytes: number;
        deadLetters: number;
      }
    | undefined;
  redisReady?: () => Record<string, boolean>;
  pendingHandshakes?: () => number;
  echoAddresses?: () => number;
}

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
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
    socketPendingHandshakes: new Gauge({
      name: 'pushrelay_socket_pending_handshakes',
      help: 'Engine connections open and not yet authenticated (they hold no connection slot; each closes after PUSHRELAY_PREAUTH_TIMEOUT_MS)',
      registers: [registry],
      collect() {
        this.set(probes.pendingHandshakes?.() ?? 0);
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
      help: 'Publishes handled by this node, by source (http, batch, legacy, socket, redis, stream, actioncable, anycable, laravel, echo) and outcome (ok, duplicate or an error code)',
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
    deliveryMalformed: new Counter({
      name: 'pushrelay_delivery_malformed_total',
      help: 'Messages from Redis (delivery channels, history entries) dropped because no socket could be sent them, by reason: invalid_json, invalid_shape, invalid_position, reserved_event (a Socket.IO event such as connect), invalid_event',
      labelNames: ['reason'] as const,
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
    webhookEvents: new Counter({
      name: 'pushrelay_webhook_events_total',
      help: 'Webhook events by receiver (its origin), outcome (queued, delivered, retried, dead_lettered, refused: over PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES or Redis away) and event type (offline for the offline webhook)',
      labelNames: ['endpoint', 'outcome', 'type'] as const,
      registers: [registry],
    }),
    webhookLatency: new Histogram({
      name: 'pushrelay_webhook_delivery_latency_seconds',
      help: 'Time from a webhook event being produced to the receiver acknowledging it (debounce and retries included), by receiver',
      labelNames: ['endpoint'] as const,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600],
      registers: [registry],
    }),
    webhookQueueDepth: new Gauge({
      name: 'pushrelay_webhook_queue_keys',
      help: 'Users and channels with webhook events waiting, cluster-wide, by receiver',
      labelNames: ['endpoint'] as const,
      registers: [registry],
      collect() {
        for (const [endpoint, s] of Object.entries(probes.webhooks?.()?.endpoints ?? {}))
          this.set({ endpoint }, s.depth);
      },
    }),
    webhookRetrying: new Gauge({
      name: 'pushrelay_webhook_retrying_keys',
      help: 'Users and channels whose next webhook event failed at least once and waits for a retry, cluster-wide, by receiver',
      labelNames: ['endpoint'] as const,
      registers: [registry],
      collect() {
        for (const [endpoint, s] of Object.entries(probes.webhooks?.()?.endpoints ?? {}))
          this.set({ endpoint }, s.retrying);
      },
    }),
    webhookQueuedBytes: new Gauge({
      name: 'pushrelay_webhook_queued_bytes',
      help: 'Bytes of queued webhook events of every type, per receiver (bounded by PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES), cluster-wide',
      registers: [registry],
      collect() {
        const s = probes.webhooks?.();
        if (s) this.set(s.bytes);
      },
    }),
    webhookDeadLetters: new Gauge({
      name: 'pushrelay_webhook_dead_letters',
      help: 'Webhook dead letters kept (see GET /v1/webhooks/dead), cluster-wide',
      registers: [registry],
      collect() {
        const s = probes.webhooks?.();
        if (s) this.set(s.deadLetters);
      },
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
      help: '1 when the Redis connection of this role is ready and answering (cluster mode); 0 while it is down or has not answered within PUSHRELAY_REDIS_TIMEOUT_MS',
      labelNames: ['role'] as const,
      registers: [registry],
      collect() {
        for (const [role, up] of Object.entries(probes.redisReady?.() ?? {})) this.set({ role }, up ? 1 : 0);
      },
    }),
    redisSubscriberResets: new Counter({
      name: 'pushrelay_redis_subscriber_resets_total',
      help: 'Times a Redis pub/sub connection of this node went down while up (Redis closed it at its pub/sub output-buffer limit, CLIENT KILL, a restart), by role: deliveries (subscriber) are caught up from history once it is back; raw ingest pub/sub (ingest) and adapter traffic sent meanwhile are lost',
      labelNames: ['role'] as const,
      registers: [registry],
    }),
    redisMessages: new Counter({
      name: 'pushrelay_redis_messages_received_total',
      help: 'Pub/sub messages this node received from Redis, by connection role: deliveries (subscriber), Socket.IO adapter traffic (adapter), raw ingest channels and patterns (ingest: every node receives every raw message and handles its share). Deliveries and adapter traffic grow with the traffic for this node’s own sockets, not with the number of nodes',
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
      help: 'Messages from a Redis source (raw pub/sub, the ingest stream, ActionCable, AnyCable, Laravel) that were refused as malformed, by source and error code',
      labelNames: ['source', 'code'] as const,
      registers: [registry],
    }),
    ingestMessages: new Counter({
      name: 'pushrelay_ingest_messages_total',
      help: 'Messages this node took from a Redis or AnyCable source, by source and outcome: published (handed to the publish path; duplicates included), refused, ignored (AnyCable commands), not_owner (another node handles it), claimed_elsewhere (another node took it during a membership change), dropped (this node is not an active member, or PUSHRELAY_INGEST_MAX_INFLIGHT is reached), failed (the publish path failed; a stream entry is retried)',
      labelNames: ['source', 'outcome'] as const,
      registers: [registry],
    }),
    ingestDeadLetters: new Counter({
      name: 'pushrelay_ingest_dead_letters_total',
      help: 'Stream entries this node moved to the dead-letter stream (<prefix>:publish:dead), by source and reason',
      labelNames: ['source', 'reason'] as const,
      registers: [registry],
    }),
    ingestStreamLag: new Gauge({
      name: 'pushrelay_ingest_stream_lag_seconds',
      help: 'Age of the oldest entry not yet handled in each ingest stream this node works on (the main stream it routes, the partitions it owns); 0 when caught up',
      labelNames: ['stream'] as const,
      registers: [registry],
    }),
    ingestStreamPending: new Gauge({
      name: 'pushrelay_ingest_stream_pending_entries',
      help: 'Entries not yet acknowledged (read and in progress, or not yet read) in each ingest stream this node works on',
      labelNames: ['stream'] as const,
      registers: [registry],
    }),
    ingestTakeovers: new Counter({
      name: 'pushrelay_ingest_takeovers_total',
      help: 'Stream work this node took over: the router or a partition whose lease it acquired, by source and role (router, partition)',
      labelNames: ['source', 'role'] as const,
      registers: [registry],
    }),
    ingestClaimedEntries: new Counter({
      name: 'pushrelay_ingest_stream_claimed_entries_total',
      help: 'Stream entries another node had read but not acknowledged (it died or left) that this node claimed and handled, by source and role',
      labelNames: ['source', 'role'] as const,
      registers: [registry],
    }),
    ingestPartitionsOwned: new Gauge({
      name: 'pushrelay_ingest_partitions_owned',
      help: 'Ingest stream partitions this node owns, by source; across the cluster they add up to PUSHRELAY_INGEST_PARTITIONS per source',
      labelNames: ['source'] as const,
      registers: [registry],
    }),
    ingestRouter: new Gauge({
      name: 'pushrelay_ingest_router_active',
      help: '1 while this node routes an ingest stream into its partitions, by source (one node per source at a time)',
      labelNames: ['source'] as const,
      registers: [registry],
    }),
    ingestMembers: new Gauge({
      name: 'pushrelay_ingest_members',
      help: 'Live nodes sharing raw pub/sub ingest, as this node sees them (0 while this node is not one of them)',
      registers: [registry],
    }),
    ingestIgnored: new Counter({
      name: 'pushrelay_ingest_ignored_total',
      help: 'Parts of source messages understood and deliberately not acted on, by source and reason (AnyCable: command, meta)',
      labelNames: ['source', 'reason'] as const,
      registers: [registry],
    }),
    ingestLogSuppressed: new Counter({
      name: 'pushrelay_ingest_log_lines_suppressed_total',
      help: 'Log lines about refused ingest messages left out by the rate limit (5 per 10 s per source and reason), by source',
      labelNames: ['source'] as const,
      registers: [registry],
    }),
    echoAddresses: new Gauge({
      name: 'pushrelay_echo_addresses',
      help: 'Client addresses holding connected Laravel Echo sockets on this node (each at most PUSHRELAY_ECHO_MAX_PER_ADDRESS of them)',
      registers: [registry],
      collect() {
        this.set(probes.echoAddresses?.() ?? 0);
      },
    }),
    echoSubscriptions: new Counter({
      name: 'pushrelay_echo_subscriptions_total',
      help: 'Laravel Echo subscribe requests, by kind (public, private, presence) and outcome: ok, or why it was refused (invalid_channel, not_public, too_many_channels, auth_refused, auth_failed, auth_timeout, auth_garbage, auth_overloaded, no_auth_url, unavailable)',
      labelNames: ['kind', 'outcome'] as const,
      registers: [registry],
    }),
    echoAuthDuration: new Histogram({
      name: 'pushrelay_echo_auth_duration_seconds',
      help: 'Time calls to PUSHRELAY_ECHO_AUTH_URL took, answered or not',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    echoAuthInflight: new Gauge({
      name: 'pushrelay_echo_auth_inflight',
      help: 'Calls to PUSHRELAY_ECHO_AUTH_URL this node is waiting for',
      registers: [registry],
    }),
    echoWhispers: new Counter({
      name: 'pushrelay_echo_whispers_total',
      help: 'Laravel Echo whispers (client events), by outcome: ok, or why they were dropped (invalid, not_subscribed, not_private)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'pushrelay_ratelimit_rejections_total',
      help: 'Requests refused by a rate limit, by scope (publisher, socket, connection: the node handshake rate, address: unauthenticated handshakes of one client address, preauth_evicted: the oldest unauthenticated handshake closed for a new one past PUSHRELAY_PREAUTH_MAX, echo_address: Laravel Echo sockets of one client address past PUSHRELAY_ECHO_MAX_PER_ADDRESS)',
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
    consoleActions: new Counter({
      name: 'pushrelay_console_actions_total',
      help: 'Dead-letter actions taken by admin keys (console or API), by action (retry, discard) and queue (ingest, webhooks)',
      labelNames: ['action', 'queue'] as const,
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
