import type { Logger } from 'pino';

/** Lines one (source, reason) pair may log per window; past it they are counted, not written. */
export const LOG_LINES_PER_WINDOW = 5;
export const LOG_WINDOW_MS = 10_000;
/** Distinct (source, reason) pairs tracked; reasons are error codes, so this is never reached in practice. */
const MAX_KEYS = 256;
/** Characters of a refused message quoted in its log line: the line stays under ~400 bytes. */
export const SAMPLE_CHARS = 120;

interface Window {
  start: number;
  written: number;
  suppressed: number;
}

/**
 * Rate-limited warnings for messages the ingest refuses. A producer sending
 * garbage at thousands a second would otherwise write a line each (a few
 * hundred bytes apiece) and fill the disk; here each (source, reason) writes
 * at most LOG_LINES_PER_WINDOW lines per LOG_WINDOW_MS, and the first line
 * after a quiet spell says how many were left out. Counting in metrics is the
 * caller's job and is never throttled.
 */
export class ThrottledLog {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly log: Logger,
    private readonly onSuppressed: (source: string) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {}

  warn(source: string, reason: string, fields: Record<string, unknown>, message: string): void {
    const key = `${source}\u0000${reason}`;
    const now = this.now();
    let w = this.windows.get(key);
    if (w === undefined) {
      if (this.windows.size >= MAX_KEYS) this.windows.clear();
      w = { start: now, written: 0, suppressed: 0 };
      this.windows.set(key, w);
    }
    let carried = 0;
    if (now - w.start >= LOG_WINDOW_MS) {
      carried = w.suppressed;
      w.start = now;
      w.written = 0;
      w.suppressed = 0;
    }
    if (w.written >= LOG_LINES_PER_WINDOW) {
      w.suppressed++;
      this.onSuppressed(source);
      return;
    }
    w.written++;
    const extra = carried > 0 ? { suppressed: carried } : {};
    this.log.warn({ source, reason, ...fields, ...extra }, message);
  }
}

/** A short, single-line quote of a refused message for a log line. */
export function sample(text: string): string {
  return text.length > SAMPLE_CHARS ? `${text.slice(0, SAMPLE_CHARS)}…` : text;
}
