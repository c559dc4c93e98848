import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';

// The README's tour as a shell script: its own code blocks, in order, with
// only the address of the relay (and of Redis) rewritten, so the tests try
// exactly what a reader would type.

const ROOT = resolve(import.meta.dirname, '../..');
const sh = promisify(execFile);

export function tourBlock(name: string): string {
  const readme = readFileSync(resolve(ROOT, 'README.md'), 'utf8');
  const m = new RegExp(`<!-- tour:${name} -->\\n\`\`\`bash\\n([\\s\\S]*?)\`\`\``).exec(readme);
  if (!m) throw new Error(`README has no tour:${name} block`);
  return m[1]!;
}

export interface TourOptions {
  /** Where the relay (or the balancer in front of it) listens; replaces localhost:8080. */
  port: number;
  /** The secrets the tour tells the reader to copy from the log. */
  publisherSecret: string;
  jwtSecret: string;
  /** The tour's steps to run after connecting the Node client, by block name. */
  steps: string[];
  /** Port of the test's Redis, for the redis-cli step. */
  redisPort?: number;
}

/** Runs the tour's blocks in a shell and returns what they printed. */
export async function runTour(o: TourOptions): Promise<string> {
  const here = (s: string) => s.replaceAll('localhost:8080', `127.0.0.1:${o.port}`);
  const step = (name: string) =>
    name === 'redis-cli' && o.redisPort !== undefined
      ? tourBlock(name).replace('redis-cli ', `redis-cli -p ${o.redisPort} `)
      : here(tourBlock(name));
  const script = [
    'set -e',
    tourBlock('env')
      .replace(/PUSHRELAY_SECRET=\S+/, `PUSHRELAY_SECRET=${o.publisherSecret}`)
      .replace(/PUSHRELAY_JWT_SECRET=\S+/, `PUSHRELAY_JWT_SECRET=${o.jwtSecret}`),
    tourBlock('token'),
    'export TOKEN',
    here(tourBlock('node-client')),
    'sleep 2',
    ...o.steps.flatMap((name) => [step(name), 'echo']),
    'sleep 1',
    'kill %1',
  ].join('\n');
  const { stdout } = await sh('bash', ['-c', script], { cwd: ROOT, timeout: 60_000 });
  return stdout;
}
