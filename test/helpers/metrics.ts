// Reads a node's /metrics the way Prometheus does: over HTTP, in the text
// exposition format, one sample per line.

export type Labels = Record<string, string>;

export interface Sample {
  readonly name: string;
  readonly labels: Labels;
  readonly value: number;
}

export class Scrape {
  constructor(readonly samples: readonly Sample[]) {}

  /** Every sample of `name` whose labels include `labels`. */
  find(name: string, labels: Labels = {}): Sample[] {
    return this.samples.filter(
      (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
    );
  }

  /** The sum of the matching samples; 0 when there are none (a counter not yet incremented). */
  value(name: string, labels: Labels = {}): number {
    return this.find(name, labels).reduce((n, s) => n + s.value, 0);
  }

  has(name: string): boolean {
    return this.samples.some((s) => s.name === name);
  }

  /** Metric families named in # TYPE lines are not kept; names of samples are enough here. */
  names(): Set<string> {
    return new Set(this.samples.map((s) => s.name));
  }
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseExposition(text: string): Scrape {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Labels = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1');
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return new Scrape(samples);
}

export async function scrape(baseUrl: string): Promise<Scrape> {
  const res = await fetch(`${baseUrl}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  if (!res.headers.get('content-type')?.startsWith('text/plain')) {
    throw new Error(`/metrics content-type is ${res.headers.get('content-type')}`);
  }
  return parseExposition(await res.text());
}
