import { describe, expect, it } from 'vitest';
import { loadBenchConfig, SYSTEMS } from '../../bench/config.js';
import { area, summarizeProfile } from '../../bench/profile.js';
import { bySystem, type PairedResult, renderIssueTargets, type SystemResult } from '../../bench/report.js';
import {
  cpuMicrosPerUnit,
  median,
  parseProcStat,
  percentile,
  ratio,
  Samples,
  SeenSet,
  summarize,
} from '../../bench/stats.js';

describe('bench statistics', () => {
  it('takes nearest-rank percentiles', () => {
    const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentile(sorted, 50)).toBe(5);
    expect(percentile(sorted, 90)).toBe(9);
    expect(percentile(sorted, 99)).toBe(10);
    expect(percentile(sorted, 100)).toBe(10);
    expect(percentile(sorted, 0)).toBe(1);
    expect(percentile([42], 99)).toBe(42);
    expect(percentile([], 50)).toBeNaN();
  });

  it('p99 of 1000 samples is the 990th smallest, whatever the input order', () => {
    const samples = Array.from({ length: 1000 }, (_, i) => 1000 - i);
    const s = summarize(samples);
    expect(s).toEqual({ count: 1000, p50: 500, p90: 900, p99: 990, max: 1000 });
  });

  it('grows a sample buffer without losing values', () => {
    const s = new Samples();
    for (let i = 0; i < 5000; i++) s.push(i);
    expect(s.length).toBe(5000);
    expect(s.values()[4999]).toBe(4999);
    s.clear();
    expect(s.values().length).toBe(0);
  });

  it('counts duplicates and unique sequence numbers in any order', () => {
    const seen = new SeenSet();
    for (const n of [5, 1, 1000, 5, 0, 1000, 1000]) seen.add(n);
    expect(seen.unique).toBe(4);
    expect(seen.duplicates).toBe(3);
    seen.reset();
    expect(seen.add(5)).toBe(true);
    expect(seen.unique).toBe(1);
    expect(seen.duplicates).toBe(0);
  });

  it('computes ratios and CPU per unit, refusing missing or zero bases', () => {
    expect(ratio(3, 2)).toBe(1.5);
    expect(ratio(3, 0)).toBeUndefined();
    expect(ratio(undefined, 2)).toBeUndefined();
    expect(ratio(Number.NaN, 2)).toBeUndefined();
    expect(cpuMicrosPerUnit(0.5, 1000)).toBe(500);
    expect(cpuMicrosPerUnit(0.5, 0)).toBeUndefined();
  });

  it('reads utime + stime from /proc/<pid>/stat, even with spaces and parentheses in the name', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    fields[11] = '250'; // utime (field 14)
    fields[12] = '50'; // stime (field 15)
    const line = `1234 (node (a) b) ${fields.join(' ')}`;
    expect(parseProcStat(line, 100)).toBe(3);
  });
});

describe('bench repetitions', () => {
  it('takes medians, ignoring missing values', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([undefined, 5, Number.NaN])).toBe(5);
    expect(median([])).toBeUndefined();
  });

  it('reports the median of each system over its runs, and sums losses', () => {
    const run = (n: number, cpu: number, lost: number): SystemResult => ({
      def: SYSTEMS.pushrelay,
      run: n,
      memory: undefined,
      phases: {
        'targeted-max': {
          wallMs: 1000,
          cpu: { servers: cpu, redis: 0, load: 0 },
          phase: {
            requests: 1000,
            httpErrors: 0,
            messages: 1000,
            recipients: 1000,
            expected: 1000,
            delivered: 1000 - lost,
            lost,
            duplicates: 0,
            misrouted: 0,
            strays: 0,
            disconnects: 0,
            elapsedMs: 1000,
            sendMs: 1000,
            latency: { count: 1000, p50: n, p90: n, p99: n, max: n },
          },
        },
      },
    });
    const [only] = bySystem([run(1, 0.1, 0), run(2, 0.3, 2), run(3, 0.2, 1)], [1000]);
    expect(only!.runs).toBe(3);
    expect(only!.f.targeted.cpuPerRequest).toBeCloseTo(200);
    expect(only!.f.targeted.perSecond).toBe(1000);
    expect(only!.f.lost).toBe(3);
  });

  it('computes issue 15 ratios inside each pass against the peer of the mode, then marks the median', () => {
    const phase = (requests: number, cpu: number, p99: number) => ({
      wallMs: 1000,
      cpu: { servers: cpu, redis: 0, load: 0 },
      phase: {
        requests,
        httpErrors: 0,
        messages: requests,
        recipients: requests,
        expected: requests,
        delivered: requests,
        lost: 0,
        duplicates: 0,
        misrouted: 0,
        strays: 0,
        disconnects: 0,
        elapsedMs: 1000,
        sendMs: 1000,
        latency: { count: requests, p50: p99, p90: p99, p99, max: p99 },
      },
    });
    // CPU per targeted publish: relay 200 µs in pass 1 and 100 in pass 2, peer 100 then 200: ratios 2.0 and 0.5.
    const result = (id: 'pushrelay' | 'socketio', run: number, cpu: number): SystemResult => ({
      def: SYSTEMS[id],
      run,
      memory: undefined,
      phases: {
        'targeted-max': phase(1000, cpu, 10),
        'targeted-rate': phase(100, 0.01, 10),
        'batch-max': phase(100_000, cpu * 10, 10),
      },
    });
    const text = renderIssueTargets(loadBenchConfig({ BENCH_FANOUTS: '1000' }), [
      result('socketio', 1, 0.1),
      result('pushrelay', 1, 0.2),
      result('socketio', 2, 0.2),
      result('pushrelay', 2, 0.1),
    ]);
    const row = text.split('\n').find((l) => l.includes('CPU per targeted publish'))!;
    expect(row).toContain('| 2.00× | 0.50× | 1.25× | met |');
    const batch = text.split('\n').find((l) => l.includes('CPU per batch message'))!;
    expect(batch).toContain('| 0.10× | 0.10× | 0.10× | met |');
    expect(text).toContain('| 0 / 0 | met |');

    // The paired phase: its own p99 row, ratios per pass, and its losses in the pass totals.
    const pairedPhase = (p99: number, lost: number) => ({ ...phase(4000, 0, p99).phase, lost });
    const paired: PairedResult[] = [
      {
        relay: 'pushrelay',
        peer: 'socketio',
        run: 1,
        segments: 10,
        relayPhase: pairedPhase(3, 0),
        peerPhase: pairedPhase(2, 0),
      },
      {
        relay: 'pushrelay',
        peer: 'socketio',
        run: 2,
        segments: 10,
        relayPhase: pairedPhase(1, 2),
        peerPhase: pairedPhase(2, 0),
      },
    ];
    const withPaired = renderIssueTargets(
      loadBenchConfig({ BENCH_FANOUTS: '1000' }),
      [
        result('socketio', 1, 0.1),
        result('pushrelay', 1, 0.2),
        result('socketio', 2, 0.2),
        result('pushrelay', 2, 0.1),
      ],
      paired,
    );
    const pairedRow = withPaired.split('\n').find((l) => l.includes('paired: both up at once'))!;
    expect(pairedRow).toContain('| 1.50× | 0.50× | 1.00× | met |');
    const sequential = withPaired.split('\n').find((l) => l.includes('sequential'))!;
    expect(sequential).toContain('| 1.00× | 1.00× | 1.00× | met |');
    expect(withPaired).toContain('| 2 / 0 | **not met** |');
  });
});

describe('bench profile summary', () => {
  it('attributes self time, total time and package from a V8 profile', () => {
    const frame = (functionName: string, url = '') => ({ functionName, url, lineNumber: 0 });
    const profile = {
      nodes: [
        { id: 1, callFrame: frame('(root)'), children: [2, 4] },
        { id: 2, callFrame: frame('handler', 'file:///app/dist/http/publish.js'), children: [3] },
        { id: 3, callFrame: frame('encode', 'file:///app/node_modules/socket.io-parser/build/index.js') },
        { id: 4, callFrame: frame('(idle)') },
      ],
      startTime: 0,
      endTime: 4000,
      // Each sample lasts until the next one: 1 ms each, the last one has no length.
      samples: [2, 3, 3, 4, 4],
      timeDeltas: [0, 1000, 1000, 1000, 1000],
    };
    const { summary, folded } = summarizeProfile('p', profile);
    expect(summary.busyMs).toBe(3);
    expect(summary.totalMs).toBe(4);
    expect(summary.self[0]).toEqual(['encode socket.io-parser/build/index.js:1', 2]);
    expect(summary.inclusive[0]).toEqual(['handler dist/http/publish.js:1', 3]);
    expect(summary.areas).toEqual([
      ['socket.io-parser', 2],
      ['pushrelay', 1],
    ]);
    expect(folded).toContain('handler dist/http/publish.js:1;encode socket.io-parser/build/index.js:1 2000');
    expect(area('node:internal/streams/writable', 'clearBuffer')).toBe('node internals');
    expect(area('file:///x/node_modules/@socket.io/redis-adapter/dist/index.js', 'f')).toBe(
      '@socket.io/redis-adapter',
    );
  });
});
