import type { Logger } from 'pino';
import type { Metrics } from '../../metrics/index.js';
import type { Ingest, PublishOptions, PublishSource } from '../ingest.js';
import type { PublishBody } from '../schema.js';
import type { ThrottledLog } from './throttled-log.js';

/** What a source makes of one message (a message may carry several, as AnyCable batches do). */
export type Decoded =
  | { readonly kind: 'publish'; readonly body: PublishBody; readonly options?: PublishOptions }
  /** Understood and deliberately not delivered (AnyCable commands, meta): counted. */
  | { readonly kind: 'ignore'; readonly reason: string }
  /** Malformed: counted, logged (throttled) and, on a stream, dead-lettered. */
  | { readonly kind: 'refuse'; readonly reason: string; readonly detail: string };

/** What every source adapter is handed: the one publish path, and how to report. */
export interface SourceContext {
  readonly ingest: Ingest;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly refusals: ThrottledLog;
  readonly maxPayloadBytes: number;
  readonly maxJsonDepth: number;
}

/** Counts (and logs, throttled) a refused message; the one place refusals are reported. */
export function reportRefusal(
  ctx: SourceContext,
  source: PublishSource,
  reason: string,
  detail: string,
  where: Record<string, unknown>,
  quoted: string,
): void {
  ctx.metrics.ingestMalformed.inc({ source, code: reason });
  ctx.metrics.ingestMessages.inc({ source, outcome: 'refused' });
  ctx.refusals.warn(
    source,
    reason,
    { ...where, detail, sample: quoted },
    `refused a ${source} ingest message`,
  );
}

export const refuse = (reason: string, detail: string): Decoded => ({ kind: 'refuse', reason, detail });
