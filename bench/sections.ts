import { existsSync, readFileSync, writeFileSync } from 'node:fs';

// bench/RESULTS.md is written by two scripts: `npm run bench` (the
// comparison with plain Socket.IO) writes the whole file, `npm run
// bench:scale` (1, 2 and 4 nodes) owns the part between these markers. Each
// keeps the other's part.

export const SCALE_START = '<!-- scale:start -->';
export const SCALE_END = '<!-- scale:end -->';

export function scaleSection(text: string): string | undefined {
  const i = text.indexOf(SCALE_START);
  const j = text.indexOf(SCALE_END);
  return i === -1 || j < i ? undefined : text.slice(i, j + SCALE_END.length);
}

/** Writes the whole file but keeps the scale section already in it. */
export function writeKeepingScale(path: string, text: string): void {
  const kept = existsSync(path) ? scaleSection(readFileSync(path, 'utf8')) : undefined;
  writeFileSync(path, kept ? `${text.trimEnd()}\n\n${kept}\n` : text);
}

/** Replaces (or appends) the scale section, leaving the rest of the file as it is. */
export function writeScale(path: string, body: string): void {
  const section = `${SCALE_START}\n${body.trim()}\n${SCALE_END}`;
  const text = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const old = scaleSection(text);
  writeFileSync(path, old ? text.replace(old, section) : `${text.trimEnd()}\n\n${section}\n`);
}
