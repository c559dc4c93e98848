// Numbers the benchmark reports, kept apart from the I/O so they can be unit tested.

/**
 * The p-th percentile (0-100) of `sorted` (ascending), by the nearest-rank
 * method: the smallest sample such that at least p% of the samples are at or
 * below it. NaN for no samples.
 */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  if (p <= 0) return sorted[0]!;
  if (p >= 100) return sorted[sorted.length - 1]!;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.max(0, rank - 1)]!;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Summarizes latency samples in milliseconds; sorts a copy. */
export function summarize(samples: Float64Array | number[]): LatencySummary {
  const sorted = Float64Array.from(samples).sort();
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: percentile(sorted, 100),
  };
}

/** A growable array of doubles; a plain number[] of a million samples costs four times the memory. */
export class Samples {
  private buf = new Float64Array(1024);
  length = 0;

  push(v: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = v;
  }

  values(): Float64Array {
    return this.buf.subarray(0, this.length);
  }

  clear(): void {
    this.length = 0;
  }
}

/**
 * Which sequence numbers one client has seen in a phase: a bit per number,
 * so a second copy is a duplicate and a missing bit a loss, whatever order
 * the messages arrive in.
 */
export class SeenSet {
  private bits = new Uint8Array(64);
  unique = 0;
  duplicates = 0;

  /** Records `seq` (a non-negative integer); false when it was seen before. */
  add(seq: number): boolean {
    const byte = seq >>> 3;
    if (byte >= this.bits.length) {
      let size = this.bits.length;
      while (size <= byte) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.bits);
      this.bits = next;
    }
    const mask = 1 << (seq & 7);
    if ((this.bits[byte]! & mask) !== 0) {
      this.duplicates++;
      return false;
    }
    this.bits[byte]! |= mask;
    this.unique++;
    return true;
  }

  reset(): void {
    this.bits.fill(0);
    this.unique = 0;
    this.duplicates = 0;
  }
}

/** The median of the finite values (the mean of the middle two for an even count); undefined for none. */
export function median(values: readonly (number | undefined)[]): number | undefined {
  const v = values.filter((x): x is number => x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** `value / base`, or undefined when either is missing or the base is zero. */
export function ratio(value: number | undefined, base: number | undefined): number | undefined {
  if (value === undefined || base === undefined || !Number.isFinite(value) || !Number.isFinite(base)) {
    return undefined;
  }
  return base === 0 ? undefined : value / base;
}

/** CPU seconds spent between two samples, in microseconds per unit of work. */
export function cpuMicrosPerUnit(cpuSeconds: number, units: number): number | undefined {
  return units > 0 ? (cpuSeconds * 1e6) / units : undefined;
}

/**
 * Parses the utime and stime fields of /proc/<pid>/stat into seconds. The
 * command name (field 2) may hold spaces and parentheses, so fields are
 * counted from the last ')'.
 */
export function parseProcStat(text: string, clockTicks: number): number {
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14, stime field 15.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error('unreadable /proc stat line');
  return (utime + stime) / clockTicks;
}
