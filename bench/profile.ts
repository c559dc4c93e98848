import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';

// Summarizes V8 CPU profiles (.cpuprofile, as --cpu-prof or the bench probe
// writes them): the functions with the most self time and the most total
// time, and self time by package. Also writes <profile>.folded, the folded
// stacks flame graph tools read (speedscope, flamegraph.pl, inferno).
//
//   tsx bench/profile.ts bench/profiles/*.cpuprofile > summary.md

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const IDLE = new Set(['(idle)', '(program)']);

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length);
  const src = url.indexOf('/dist/');
  if (src >= 0) return url.slice(src + 1);
  const bench = url.indexOf('/bench/');
  if (bench >= 0) return url.slice(bench + 1);
  return url.replace(/^node:/, 'node:');
}

/** The package (or pushrelay's own code, or Node's internals) a frame belongs to. */
export function area(url: string, name: string): string {
  if (url === '') return name.startsWith('(') ? name : '(native)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.includes('/dist/')) return 'pushrelay';
  if (url.startsWith('node:')) return 'node internals';
  return shortUrl(url);
}

function key(f: CallFrame): string {
  const name = f.functionName || '(anonymous)';
  return f.url ? `${name} ${shortUrl(f.url)}:${f.lineNumber + 1}` : name;
}

export interface Summary {
  name: string;
  /** Milliseconds sampled, and how many of them the process was busy (not idle). */
  totalMs: number;
  busyMs: number;
  self: [string, number][];
  inclusive: [string, number][];
  areas: [string, number][];
}

export function summarizeProfile(name: string, profile: CpuProfile): { summary: Summary; folded: string } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const areas = new Map<string, number>();
  const folded = new Map<string, number>();
  let totalMs = 0;
  let busyMs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    // A sample's time is the gap to the next sample.
    const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    const node = byId.get(profile.samples[i]!);
    if (!node) continue;
    totalMs += ms;
    if (IDLE.has(node.callFrame.functionName)) continue;
    busyMs += ms;
    const k = key(node.callFrame);
    self.set(k, (self.get(k) ?? 0) + ms);
    const a = area(node.callFrame.url, node.callFrame.functionName);
    areas.set(a, (areas.get(a) ?? 0) + ms);
    const seen = new Set<string>();
    const stack: string[] = [];
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id)!.callFrame;
      if (f.functionName === '(root)') break;
      const fk = key(f);
      stack.push(fk.replace(/;/g, ','));
      if (seen.has(fk)) continue;
      seen.add(fk);
      inclusive.set(fk, (inclusive.get(fk) ?? 0) + ms);
    }
    const line = stack.reverse().join(';');
    folded.set(line, (folded.get(line) ?? 0) + ms);
  }
  const top = (m: Map<string, number>, n: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n);
  return {
    summary: {
      name,
      totalMs,
      busyMs,
      self: top(self, 25),
      inclusive: top(inclusive, 25),
      areas: top(areas, 15),
    },
    folded: [...folded].map(([stack, ms]) => `${stack} ${Math.max(1, Math.round(ms * 1000))}`).join('\n'),
  };
}

export function renderSummary(s: Summary): string {
  const pct = (ms: number) => `${((100 * ms) / s.busyMs).toFixed(1)}%`;
  const lines = [
    `### ${s.name}`,
    '',
    `${(s.busyMs / 1000).toFixed(2)} s busy of ${(s.totalMs / 1000).toFixed(2)} s sampled.`,
    '',
    '| self | by package |',
    '| ---: | --- |',
    ...s.areas.map(([a, ms]) => `| ${pct(ms)} | ${a} |`),
    '',
    '| self | function |',
    '| ---: | --- |',
    ...s.self.map(([k, ms]) => `| ${pct(ms)} | \`${k}\` |`),
    '',
    '| total | function (self and callees) |',
    '| ---: | --- |',
    ...s.inclusive.map(([k, ms]) => `| ${pct(ms)} | \`${k}\` |`),
    '',
  ];
  return lines.join('\n');
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url.endsWith(basename(process.argv[1]));
if (invokedDirectly) {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    process.stderr.write('usage: tsx bench/profile.ts <file.cpuprofile>...\n');
    process.exit(2);
  }
  for (const file of files) {
    const { summary, folded } = summarizeProfile(
      basename(file, '.cpuprofile'),
      JSON.parse(readFileSync(file, 'utf8')) as CpuProfile,
    );
    writeFileSync(file.replace(/\.cpuprofile$/, '.folded'), folded);
    process.stdout.write(`${renderSummary(summary)}\n`);
  }
}
