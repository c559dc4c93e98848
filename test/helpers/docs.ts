import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Counter, Gauge, Histogram } from 'prom-client';
import { schema } from '../../src/config/schema.js';
import { DISCONNECTS, ERRORS } from '../../src/errors.js';
import { createMetrics } from '../../src/metrics/index.js';

// The README's generated tables. `npm run docs` rewrites them; the unit tests
// fail when the README and the code disagree.

export const README = resolve(import.meta.dirname, '../../README.md');

const cell = (s: string) => s.replace(/\|/g, '\\|');

export function configTable(): string {
  const rows = Object.values(schema).map((v) => `| \`${v.env}\` | ${cell(v.defaultDoc)} | ${cell(v.doc)} |`);
  return ['| variable | default | meaning |', '| --- | --- | --- |', ...rows].join('\n');
}

export function errorTable(): string {
  const rows = Object.entries(ERRORS).map(
    ([code, e]) => `| ${e.status} | \`${code}\` | ${cell(e.message)} |`,
  );
  return ['| status | code | message |', '| --- | --- | --- |', ...rows].join('\n');
}

export function disconnectTable(): string {
  const rows = Object.entries(DISCONNECTS).map(
    ([reason, d]) =>
      `| ${d.code} | \`${reason}\` | ${d.reconnect ? 'yes, at once' : 'no'} | ${cell(d.message)} |`,
  );
  return ['| code | reason | reconnect | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

/** The relay's own metrics (the default process metrics are prom-client's). */
export function metricsTable(): string {
  const rows = createMetrics()
    .registry.getMetricsAsArray()
    .filter((m) => m.name.startsWith('pushrelay_'))
    .map((m) => {
      const type =
        m instanceof Counter
          ? 'counter'
          : m instanceof Histogram
            ? 'histogram'
            : m instanceof Gauge
              ? 'gauge'
              : '?';
      const labels = ((m as { labelNames?: readonly string[] }).labelNames ?? [])
        .map((l) => `\`${l}\``)
        .join(', ');
      return `| \`${m.name}\` | ${type} | ${labels} | ${cell(m.help)} |`;
    });
  return ['| metric | type | labels | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

export const SECTIONS: Record<string, () => string> = {
  config: configTable,
  errors: errorTable,
  disconnects: disconnectTable,
  metrics: metricsTable,
};

/** The text between `<!-- name:start -->` and `<!-- name:end -->`. */
export function section(text: string, name: string): string | undefined {
  const m = new RegExp(`<!-- ${name}:start -->\\n([\\s\\S]*?)\\n<!-- ${name}:end -->`).exec(text);
  return m?.[1];
}

export function render(text: string): string {
  let out = text;
  for (const [name, make] of Object.entries(SECTIONS)) {
    out = out.replace(
      new RegExp(`(<!-- ${name}:start -->\\n)[\\s\\S]*?(\\n<!-- ${name}:end -->)`),
      (_, a: string, b: string) => `${a}${make()}${b}`,
    );
  }
  return out;
}

if (process.argv[1] === import.meta.filename) {
  writeFileSync(README, render(readFileSync(README, 'utf8')));
  process.stdout.write('README tables rewritten\n');
}
