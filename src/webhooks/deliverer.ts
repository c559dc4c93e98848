import type { Logger } from 'pino';
import type { Metrics } from '../metrics/index.js';
import { tsOf, typeOf, webhookSignature } from './events.js';
import type { Claim, Endpoint, QueueItem, WebhookQueue, WebhookStats } from './types.js';

export interface DelivererOptions {
  /** No answer within it is a failed attempt. */
  readonly timeoutMs: number;
  /** Events of one key are retried for this long after their first failure, then dead-lettered. */
  readonly retryMs: number;
  /** First retry delay; each retry doubles it, up to `maxDelayMs`, with ±25 % jitter. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** Calls in flight at once per receiver (each is one key's events). */
  readonly concurrency: number;
  /** Events per call at most. */
  readonly batch: number;
  /** How often due keys are looked for when nothing woke the deliverer. */
  readonly pollMs: number;
}

/** How often a node offers to look for webhook queues a crash left unindexed (Redis Cluster only). */
const SWEEP_EVERY_MS = 60_000;

/** Largest body of one call, in characters of event JSON (several events of one key are batched up to it). */
export const MAX_CALL_BYTES = 1024 * 1024;

export const DELIVERER_DEFAULTS: Omit<DelivererOptions, 'timeoutMs' | 'retryMs'> = {
  baseDelayMs: 500,
  maxDelayMs: 5 * 60_000,
  concurrency: 8,
  batch: 100,
  pollMs: 250,
};

/**
 * Drains the queues: every node claims due keys of every receiver, calls the
 * receiver with their events, and acks, retries (backoff with jitter) or
 * dead-letters them. One key's events go out one call at a time (its lease),
 * so they arrive in order; many keys go out at once.
 */
export class Deliverer {
  private readonly inflight = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private again = false;
  private closed = false;
  private lastStats: WebhookStats | undefined;
  private statsAt = 0;
  private sweptAt = Date.now();

  constructor(
    private readonly queue: WebhookQueue,
    private readonly endpoints: readonly Endpoint[],
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly options: DelivererOptions,
  ) {}

  start(): void {
    this.schedule(0);
  }

  /** Something was queued here: look at once rather than at the next poll. */
  wake(): void {
    if (this.closed) return;
    if (this.running) this.again = true;
    else this.schedule(0);
  }

  /** The latest queue figures (refreshed every couple of seconds by the poll). */
  stats(): WebhookStats | undefined {
    return this.lastStats;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    this.timer = undefined;
    if (this.closed || this.running) return;
    this.running = true;
    this.again = false;
    try {
      const now = Date.now();
      for (const endpoint of this.endpoints) {
        const free = this.options.concurrency - (this.inflight.get(endpoint.id) ?? 0);
        if (free <= 0) continue;
        const batch = endpoint.legacy ? 1 : this.options.batch;
        const claims = await this.queue.claim(endpoint.id, now, free, batch);
        for (const claim of claims) void this.deliver(endpoint, claim);
      }
      if (this.queue.sweep && now - this.sweptAt >= SWEEP_EVERY_MS) {
        this.sweptAt = now;
        const fixed = await this.queue.sweep(this.endpoints.map((e) => e.id));
        if (fixed > 0)
          this.log.warn({ keys: fixed }, 'webhook queues missing from the due index were indexed again');
      }
      if (now - this.statsAt >= 2000) {
        this.statsAt = now;
        this.lastStats = await this.queue.stats(this.endpoints.map((e) => e.id));
      }
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'webhook queue poll failed');
    } finally {
      this.running = false;
      this.schedule(this.again ? 0 : this.options.pollMs);
    }
  }

  private async deliver(endpoint: Endpoint, whole: Claim): Promise<void> {
    this.inflight.set(endpoint.id, (this.inflight.get(endpoint.id) ?? 0) + 1);
    // A call carries at most MAX_CALL_BYTES of events (at least one): the rest
    // stay at the head of the key's queue for the next call.
    let n = 0;
    let bytes = 0;
    while (n < whole.items.length && (n === 0 || bytes + whole.items[n]!.json.length <= MAX_CALL_BYTES)) {
      bytes += whole.items[n]!.json.length;
      n++;
    }
    const claim = n === whole.items.length ? whole : { ...whole, items: whole.items.slice(0, n) };
    const label = { endpoint: endpoint.label };
    let delivery: string;
    let body: string;
    if (endpoint.legacy) {
      const json = claim.items[0]!.json;
      const space = json.indexOf(' ');
      delivery = json.slice(0, space);
      body = json.slice(space + 1);
    } else {
      body = `{"events":[${claim.items.map((i) => i.json).join(',')}]}`;
      delivery = /"id":"([^"]+)"/.exec(claim.items[0]!.json)?.[1] ?? '';
    }
    const attempt = claim.attempts + 1;
    let outcome: 'ok' | 'retry' | 'give-up';
    let detail = '';
    try {
      const timestamp = String(Math.floor(Date.now() / 1000));
      const res = await fetch(endpoint.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'pushrelay',
          'x-pushrelay-delivery': delivery,
          'x-pushrelay-attempt': String(attempt),
          'x-pushrelay-timestamp': timestamp,
          'x-pushrelay-signature': webhookSignature(endpoint.secret, timestamp, body),
        },
        body,
        signal: AbortSignal.timeout(this.options.timeoutMs),
      });
      await res.arrayBuffer().catch(() => undefined);
      detail = `HTTP ${res.status}`;
      if (res.ok) outcome = 'ok';
      // The offline webhook of old gave up on a 4xx other than 408 and 429; its receivers rely on it.
      else if (
        endpoint.legacy &&
        res.status >= 400 &&
        res.status < 500 &&
        res.status !== 408 &&
        res.status !== 429
      )
        outcome = 'give-up';
      else outcome = 'retry';
    } catch (err) {
      outcome = 'retry';
      detail = (err as Error).message;
    }
    try {
      const now = Date.now();
      if (outcome === 'ok') {
        await this.queue.ack(claim);
        this.countEvents(endpoint, 'delivered', claim.items);
        for (const item of claim.items) {
          const ts = tsOf(item.json);
          if (ts !== undefined) this.metrics.webhookLatency.observe(label, Math.max(0, now - ts) / 1000);
        }
        if (endpoint.legacy) this.metrics.webhookCalls.inc({ outcome: 'ok' });
        return;
      }
      const first = claim.firstFailure || now;
      if (outcome === 'give-up' || now - first >= this.options.retryMs) {
        await this.queue.bury(claim, detail);
        this.countEvents(endpoint, 'dead_lettered', claim.items);
        if (endpoint.legacy) this.metrics.webhookCalls.inc({ outcome: 'failed' });
        this.log.warn(
          { endpoint: endpoint.label, key: claim.key, events: claim.items.length, attempts: attempt, detail },
          'webhook events dead-lettered',
        );
        return;
      }
      const delay = Math.min(
        this.options.maxDelayMs,
        this.options.baseDelayMs * 2 ** Math.min(claim.attempts, 30),
      );
      await this.queue.retry(claim, now + Math.round(delay * (0.75 + Math.random() * 0.5)));
      this.countEvents(endpoint, 'retried', claim.items);
      if (endpoint.legacy) this.metrics.webhookCalls.inc({ outcome: 'retry' });
      this.log.debug({ endpoint: endpoint.label, key: claim.key, attempt, detail }, 'webhook call failed');
    } catch (err) {
      // Redis away: the lease expires and the key is claimed again.
      this.log.debug({ err: (err as Error).message }, 'webhook ack failed');
    } finally {
      this.inflight.set(endpoint.id, (this.inflight.get(endpoint.id) ?? 1) - 1);
      this.wake();
    }
  }

  private countEvents(endpoint: Endpoint, outcome: string, items: readonly QueueItem[]): void {
    const byType = new Map<string, number>();
    for (const item of items) {
      const type = typeOf(item.json);
      byType.set(type, (byType.get(type) ?? 0) + 1);
    }
    for (const [type, n] of byType)
      this.metrics.webhookEvents.inc({ endpoint: endpoint.label, outcome, type }, n);
  }
}
