import { describe, expect, it } from 'vitest';
import { quantile } from '../../src/metrics/samples.js';

// Publish latency quantiles for the console charts come from two cumulative
// readings of the histogram's buckets: what was observed in between.

const INF = Number.POSITIVE_INFINITY;

describe('quantile of a histogram interval', () => {
  it('interpolates within the bucket that holds the rank', () => {
    const before: [number, number][] = [
      [0.001, 10],
      [0.01, 10],
      [0.1, 10],
      [INF, 10],
    ];
    // 100 new observations: 50 under 1 ms, 40 in 1-10 ms, 10 in 10-100 ms.
    const after: [number, number][] = [
      [0.001, 60],
      [0.01, 100],
      [0.1, 110],
      [INF, 110],
    ];
    expect(quantile(before, after, 0.5)).toBeCloseTo(0.001);
    expect(quantile(before, after, 0.7)).toBeCloseTo(0.001 + 0.009 * (20 / 40));
    expect(quantile(before, after, 0.99)).toBeCloseTo(0.01 + 0.09 * (9 / 10));
  });

  it('is null when nothing was observed in the interval', () => {
    const same: [number, number][] = [
      [0.001, 5],
      [INF, 5],
    ];
    expect(quantile(same, same, 0.5)).toBeNull();
    expect(quantile([], [], 0.99)).toBeNull();
  });

  it('answers the last finite bound for observations past it', () => {
    const after: [number, number][] = [
      [0.5, 0],
      [1, 0],
      [INF, 4],
    ];
    expect(quantile([], after, 0.99)).toBe(1);
  });
});
