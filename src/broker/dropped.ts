import type { Logger } from 'pino';
import { sample, ThrottledLog } from '../ingest/sources/throttled-log.js';
import type { Metrics } from '../metrics/index.js';

/**
 * Told about a message from Redis that cannot be delivered (a delivery or a
 * history entry that is not a publication this relay wrote). It is dropped,
 * counted, and logged at most a few times per window.
 */
export type DropReporter = (reason: string, channel: string, text: string) => void;

export function dropReporter(metrics: Metrics, log: Logger): DropReporter {
  const throttled = new ThrottledLog(log);
  return (reason, channel, text) => {
    metrics.deliveryMalformed.inc({ reason });
    throttled.warn(
      'delivery',
      reason,
      { channel, sample: sample(text) },
      'dropped a malformed message from Redis',
    );
  };
}
