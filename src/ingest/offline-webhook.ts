import { createHmac, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics/index.js';
import type { Publication } from './message.js';

export interface WebhookOptions {
  readonly attempts: number;
  /** First retry delay; each retry doubles it. */
  readonly baseDelayMs: number;
  readonly timeoutMs: number;
  /** Calls waiting or retrying; past it new ones are dropped (and counted) rather than growing memory. */
  readonly maxPending: number;
}

const DEFAULTS: WebhookOptions = { attempts: 6, baseDelayMs: 500, timeoutMs: 5000, maxPending: 10_000 };

/** The signature the receiving app checks: hex HMAC-SHA256(secret, "<timestamp>.<body>"). */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

/**
 * Tells the application when a publish to a user found none of that user's
 * sockets online, so it can send an e-mail or an SMS instead. One call per
 * publish (from the node that accepted it), signed, retried with exponential
 * backoff on network errors, 5xx, 408 and 429; given up on other 4xx.
 */
export class OfflineWebhook {
  private pending = 0;
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;
  private readonly options: WebhookOptions;

  constructor(
    private readonly url: URL,
    private readonly secret: string,
    private readonly nodeId: string,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    options: Partial<WebhookOptions> = {},
  ) {
    this.options = { ...DEFAULTS, ...options };
  }

  notify(users: readonly string[], publication: Publication): void {
    if (this.closed) return;
    if (this.pending >= this.options.maxPending) {
      this.metrics.webhookCalls.inc({ outcome: 'dropped' });
      return;
    }
    // data is already JSON text: spliced in, not parsed and encoded again.
    const body = `{"type":"offline","users":${JSON.stringify(users)},"message":{"id":${JSON.stringify(publication.id)},"event":${JSON.stringify(publication.event)},"ts":${publication.ts},"data":${publication.data}},"node":${JSON.stringify(this.nodeId)}}`;
    this.pending++;
    void this.attempt(body, randomUUID(), 1);
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    if (this.pending > 0)
      this.log.warn({ pending: this.pending }, 'offline webhook calls abandoned at shutdown');
  }

  private async attempt(body: string, delivery: string, n: number): Promise<void> {
    if (this.closed) return;
    const timestamp = String(Math.floor(Date.now() / 1000));
    let retry: boolean;
    let detail: string;
    try {
      const res = await fetch(this.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'pushrelay',
          'x-pushrelay-delivery': delivery,
          'x-pushrelay-attempt': String(n),
          'x-pushrelay-timestamp': timestamp,
          'x-pushrelay-signature': webhookSignature(this.secret, timestamp, body),
        },
        body,
        signal: AbortSignal.timeout(this.options.timeoutMs),
      });
      await res.arrayBuffer().catch(() => undefined);
      if (res.ok) {
        this.pending--;
        this.metrics.webhookCalls.inc({ outcome: 'ok' });
        return;
      }
      retry = res.status >= 500 || res.status === 408 || res.status === 429;
      detail = `HTTP ${res.status}`;
    } catch (err) {
      retry = true;
      detail = (err as Error).message;
    }
    if (!retry || n >= this.options.attempts) {
      this.pending--;
      this.metrics.webhookCalls.inc({ outcome: 'failed' });
      this.log.warn({ delivery, attempts: n, detail }, 'offline webhook gave up');
      return;
    }
    this.metrics.webhookCalls.inc({ outcome: 'retry' });
    const delay = this.options.baseDelayMs * 2 ** (n - 1) * (0.8 + Math.random() * 0.4);
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      void this.attempt(body, delivery, n + 1);
    }, delay);
    timer.unref();
    this.timers.add(timer);
  }
}
