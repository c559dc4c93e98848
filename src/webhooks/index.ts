import { createHash, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import type { Publication } from '../ingest/message.js';
import { userChannel } from '../ingest/message.js';
import type { Metrics } from '../metrics/index.js';
import type { Presence, PresenceEvent } from '../presence/index.js';
import type { PresenceWebhooks } from '../presence/redis.js';
import type { Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import { DELIVERER_DEFAULTS, Deliverer } from './deliverer.js';
import { EventIds, keyOf, legacyItem, presenceItem, undeliveredItem } from './events.js';
import { MemoryWebhookQueue, type QueueLimits } from './memory.js';
import { leaseMs, RedisWebhookQueue } from './redis.js';
import type { Endpoint, WebhookQueue, WebhookStats } from './types.js';

export { webhookSignature } from './events.js';
export type { DeadLetter, Endpoint, WebhookEventType, WebhookQueue, WebhookStats } from './types.js';
export { WEBHOOK_EVENT_TYPES } from './types.js';

export type WebhookQueueOptions =
  | (QueueLimits & { kind: 'memory' })
  | (QueueLimits & { kind: 'redis'; redis: Redis; names: RedisNames; leaseMs: number });

export function createWebhookQueue(options: WebhookQueueOptions): WebhookQueue {
  switch (options.kind) {
    case 'memory':
      return new MemoryWebhookQueue(options);
    case 'redis':
      return new RedisWebhookQueue(options.redis, options.names, options);
    default:
      throw new Error(`unknown webhook queue kind: ${(options as { kind: string }).kind}`);
  }
}

/** What the console and the admin routes see of the webhooks. */
export interface WebhookAdmin {
  readonly endpoints: readonly Endpoint[];
  readonly queue: WebhookQueue;
  stats(): Promise<WebhookStats>;
}

/** The lifecycle webhooks and the offline fallback, as wired into one node. */
export interface Webhooks {
  readonly admin: WebhookAdmin;
  /** For the Redis presence driver: queue each transition's events in its script. */
  readonly presence: PresenceWebhooks | undefined;
  /** After presence exists: follows its events (memory queue, metrics, Cluster due sets). */
  attach(presence: Presence): void;
  /** A publish found these targeted users offline. */
  undelivered(users: readonly string[], publication: Publication): void;
  start(): void;
  close(): void;
}

/** At most one warning per this period about events refused over the byte bound (each is counted). */
const REFUSAL_LOG_MS = 10_000;

const PRESENCE_KINDS = new Set<string>([
  'user.online',
  'user.offline',
  'channel.occupied',
  'channel.vacated',
  'member.added',
  'member.removed',
]);

function endpoint(url: URL, secret: string, legacy: boolean): Endpoint {
  const hash = createHash('sha256').update(url.href).digest('hex').slice(0, 12);
  return { id: `${legacy ? 'o' : 'w'}${hash}`, url, secret, label: url.origin, legacy };
}

/**
 * Receivers from the configuration, their queue (Redis in cluster mode,
 * memory standalone) and the deliverer; undefined when none is configured.
 */
export function wireWebhooks(deps: {
  config: Config;
  metrics: Metrics;
  log: Logger;
  redis?: { command: Redis; names: RedisNames } | undefined;
}): Webhooks | undefined {
  const { config, metrics, log, redis } = deps;
  const receivers = config.webhookSecret
    ? config.webhooks.map((u) => endpoint(u, config.webhookSecret!, false))
    : [];
  const legacy =
    config.offlineWebhook && config.offlineWebhookSecret
      ? endpoint(config.offlineWebhook, config.offlineWebhookSecret, true)
      : undefined;
  const all = legacy ? [...receivers, legacy] : receivers;
  if (all.length === 0) return undefined;

  const timeoutMs = config.webhookTimeoutSeconds * 1000;
  const limits = { maxBytes: config.webhookMaxQueueBytes, maxDeadLetters: config.webhookDeadLetters };
  const queue = redis
    ? new RedisWebhookQueue(redis.command, redis.names, { ...limits, leaseMs: leaseMs(timeoutMs) })
    : new MemoryWebhookQueue(limits);
  const deliverer = new Deliverer(queue, all, metrics, log, {
    ...DELIVERER_DEFAULTS,
    timeoutMs,
    retryMs: config.webhookRetrySeconds * 1000,
  });
  const kinds = new Set<string>(config.webhookEvents);
  const presenceKinds = [...kinds].filter((k) => PRESENCE_KINDS.has(k));
  // Receivers of presence events; none when no presence kind is asked for.
  const presenceReceivers = presenceKinds.length > 0 ? receivers : [];
  const ids = new EventIds();
  const debounceMs = config.webhookDebounceSeconds * 1000;
  const undeliveredTo = kinds.has('message.undelivered') ? receivers.map((r) => r.id) : [];

  const count = (targets: readonly string[], outcome: string, type: string) => {
    for (const id of targets) {
      const e = all.find((x) => x.id === id)!;
      metrics.webhookEvents.inc({ endpoint: e.label, outcome, type });
    }
  };

  // Refusals over the byte bound: counted at once, logged at most every REFUSAL_LOG_MS.
  let refusedSince = 0;
  let refusalLoggedAt = 0;
  const refusedTypes = new Set<string>();
  const refusal = (type: string, targets: readonly string[]) => {
    count(targets, 'refused', type);
    refusedSince += targets.length;
    refusedTypes.add(type);
    const now = Date.now();
    if (now - refusalLoggedAt < REFUSAL_LOG_MS) return;
    log.warn(
      { events: refusedSince, types: [...refusedTypes], limit: config.webhookMaxQueueBytes },
      'webhook queue full (PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES): events refused',
    );
    refusalLoggedAt = now;
    refusedSince = 0;
    refusedTypes.clear();
  };

  // The Redis presence script's refusals, by event type and key, kept until
  // the driver emits that transition's events (right after, same tick). A
  // list of receivers, a receiver once per event: one cleanup call can refuse
  // several `member.removed` of one channel.
  const refusedByScript = new Map<string, string[]>();
  const presenceHook =
    redis && queue instanceof RedisWebhookQueue && presenceReceivers.length > 0
      ? queue.presenceHook(
          presenceReceivers.map((r) => r.id),
          presenceKinds,
          debounceMs,
          () => ids.next(),
          (type, key, receiver) => {
            const id = presenceReceivers[receiver]?.id;
            if (id === undefined) return;
            if (refusedByScript.size > 1000) refusedByScript.clear();
            const k = `${type}\n${key}`;
            const list = refusedByScript.get(k);
            if (list) list.push(id);
            else refusedByScript.set(k, [id]);
          },
        )
      : undefined;

  metrics.probes.webhooks = () => {
    const s = deliverer.stats();
    if (!s) return undefined;
    const byLabel: Record<string, { depth: number; retrying: number }> = {};
    for (const e of all) {
      const x = s.endpoints[e.id];
      const acc = byLabel[e.label] ?? { depth: 0, retrying: 0 };
      byLabel[e.label] = { depth: acc.depth + (x?.depth ?? 0), retrying: acc.retrying + (x?.retrying ?? 0) };
    }
    return { endpoints: byLabel, bytes: s.bytes, deadLetters: s.deadLetters };
  };

  return {
    admin: { endpoints: all, queue, stats: () => queue.stats(all.map((e) => e.id)) },
    presence: presenceHook,
    attach(presence) {
      if (presenceReceivers.length === 0) return;
      const targets = presenceReceivers.map((r) => r.id);
      presence.onEvent((event: PresenceEvent) => {
        const queued = kinds.has(event.type);
        const key = keyOf(event);
        if (redis) {
          if (!queued) return;
          // The script queued it, or refused it for some receivers (no room).
          const k = `${event.type}\n${key}`;
          const list = refusedByScript.get(k);
          let accepted = targets;
          if (list) {
            const refused: string[] = [];
            accepted = [];
            for (const t of targets) {
              const at = list.indexOf(t);
              if (at < 0) accepted.push(t);
              else {
                list.splice(at, 1);
                refused.push(t);
              }
            }
            if (list.length === 0) refusedByScript.delete(k);
            if (refused.length > 0) refusal(event.type, refused);
          }
          count(accepted, 'queued', event.type);
          if (accepted.length === 0) return;
          // On a Cluster the due sets live in another slot.
          if (queue instanceof RedisWebhookQueue && !queue.atomicDue) {
            queue.markDue(accepted, key).catch((err: Error) => {
              log.warn({ err: err.message }, 'webhook due set not updated');
            });
          }
          deliverer.wake();
          return;
        }
        const { item, match } = presenceItem(event, ids.next(), debounceMs);
        void queue.enqueue(targets, key, queued ? item : undefined, match).then((ok) => {
          if (!queued) return;
          if (!ok) return refusal(event.type, targets);
          count(targets, 'queued', event.type);
          deliverer.wake();
        });
      });
    },
    undelivered(users, publication) {
      if (users.length === 0) return;
      const key = userChannel(users[0]!);
      const ts = Date.now();
      const jobs: Promise<void>[] = [];
      if (legacy) {
        const item = legacyItem(randomUUID(), config.nodeId, users, publication);
        jobs.push(
          queue.enqueue([legacy.id], key, item).then((ok) => {
            if (ok) count([legacy.id], 'queued', 'offline');
            else {
              refusal('offline', [legacy.id]);
              metrics.webhookCalls.inc({ outcome: 'dropped' });
            }
          }),
        );
      }
      if (undeliveredTo.length > 0) {
        const item = undeliveredItem(ids.next(), config.nodeId, users, publication, ts);
        jobs.push(
          queue
            .enqueue(undeliveredTo, key, item)
            .then((ok) =>
              ok
                ? count(undeliveredTo, 'queued', 'message.undelivered')
                : refusal('message.undelivered', undeliveredTo),
            ),
        );
      }
      if (jobs.length === 0) return;
      void Promise.all(jobs)
        .then(() => deliverer.wake())
        .catch((err: Error) => {
          log.warn({ err: err.message, users: users.length }, 'undelivered-message webhook event not queued');
          if (legacy) count([legacy.id], 'refused', 'offline');
          count(undeliveredTo, 'refused', 'message.undelivered');
        });
    },
    start: () => deliverer.start(),
    close: () => deliverer.close(),
  };
}
