import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import semver from 'semver';
import { describe, expect, it } from 'vitest';

// The registry this project installs from answers `npm audit` with 405, so
// CI cannot ask it (.ci/run still runs `npm audit --omit=dev` wherever the
// endpoint works). This keeps the known advisories of the runtime
// dependencies that handle untrusted input out of every installed copy.

const ADVISORIES: { name: string; fixed: string; advisory: string }[] = [
  { name: 'socket.io', fixed: '4.6.2', advisory: 'CVE-2024-38355: unhandled error event crashes the server' },
  {
    name: 'socket.io-parser',
    fixed: '4.2.3',
    advisory: 'CVE-2023-32695: malformed packet crashes the server',
  },
  { name: 'engine.io', fixed: '6.4.2', advisory: 'CVE-2023-31125: crafted request crashes the server' },
  { name: 'ws', fixed: '8.17.1', advisory: 'CVE-2024-37890: many headers crash the server' },
  { name: 'fastify', fixed: '5.3.2', advisory: 'CVE-2025-32442: content-type validation bypass' },
  { name: 'find-my-way', fixed: '9.0.1', advisory: 'CVE-2024-45813: ReDoS in route parameters' },
  { name: 'jose', fixed: '4.15.5', advisory: 'CVE-2024-28176: JWE decompression bomb' },
  { name: 'cookie', fixed: '0.7.0', advisory: 'CVE-2024-47764: out-of-bounds characters in cookie names' },
  { name: 'ioredis', fixed: '5.0.0', advisory: 'no known advisory; the major line this code is written for' },
];

const ROOT = resolve(import.meta.dirname, '../..');

/** Every installed copy of a package, nested ones included. */
function installed(name: string, dir = join(ROOT, 'node_modules'), found: string[] = []): string[] {
  const pkg = join(dir, name, 'package.json');
  if (existsSync(pkg)) found.push(JSON.parse(readFileSync(pkg, 'utf8')).version);
  for (const entry of existsSync(dir) ? readdirSync(dir) : []) {
    const sub = entry.startsWith('@')
      ? readdirSync(join(dir, entry)).map((e) => join(dir, entry, e, 'node_modules'))
      : [join(dir, entry, 'node_modules')];
    for (const nested of sub) if (existsSync(nested)) installed(name, nested, found);
  }
  return found;
}

describe('runtime dependencies', () => {
  for (const { name, fixed, advisory } of ADVISORIES) {
    it(`${name} is past ${fixed} everywhere it is installed (${advisory})`, () => {
      const versions = installed(name);
      expect(versions.length, `${name} is installed`).toBeGreaterThan(0);
      for (const v of versions) expect(semver.gte(v, fixed), `${name}@${v}`).toBe(true);
    });
  }
});
