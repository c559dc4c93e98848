import { existsSync, readFileSync, writeFileSync } from 'node:fs';

// bench/RESULTS.md is written by several scripts: `npm run bench` (the
// comparison with plain Socket.IO) writes the whole file; `npm run
// bench:scale` owns the parts between the markers of its sections (scale-out
// of deliveries, `scale`; Redis ingest, `ingest`). Each keeps the others'.

export const SECTIONS = ['scale', 'ingest'] as const;
export type SectionName = (typeof SECTIONS)[number];

export const SCALE_START = '<!-- scale:start -->';
export const SCALE_END = '<!-- scale:end -->';

const markers = (name: SectionName) => [`<!-- ${name}:start -->`, `<!-- ${name}:end -->`] as const;

export function section(text: string, name: SectionName): string | undefined {
  const [start, end] = markers(name);
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  return i === -1 || j < i ? undefined : text.slice(i, j + end.length);
}

export function scaleSection(text: string): string | undefined {
  return section(text, 'scale');
}

/** Writes the whole file but keeps the sections already in it. */
export function writeKeepingScale(path: string, text: string): void {
  const old = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const kept = SECTIONS.map((name) => section(old, name)).filter((s): s is string => s !== undefined);
  writeFileSync(path, kept.length > 0 ? `${text.trimEnd()}\n\n${kept.join('\n\n')}\n` : text);
}

/** Replaces (or appends) one section, leaving the rest of the file as it is. */
export function writeSection(path: string, name: SectionName, body: string): void {
  const [start, end] = markers(name);
  const fresh = `${start}\n${body.trim()}\n${end}`;
  const text = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const old = section(text, name);
  writeFileSync(path, old ? text.replace(old, fresh) : `${text.trimEnd()}\n\n${fresh}\n`);
}

export function writeScale(path: string, body: string): void {
  writeSection(path, 'scale', body);
}
