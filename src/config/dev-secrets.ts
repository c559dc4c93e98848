import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Where development secrets are kept, under the directory the relay starts in (git-ignored). */
export const DEV_SECRETS_FILE = '.pushrelay/dev-secrets.json';

export interface DevSecrets {
  readonly publisherSecret: string;
  readonly jwtSecret: string;
  /** The file they were read from or stored in; undefined when it could not be written (they last one run). */
  readonly file?: string;
}

/**
 * The development secrets of this checkout: read from `.pushrelay/dev-secrets.json`
 * under `dir`, or made up and stored there on first use. Every development
 * node started in the same directory (standalone, or several with REDIS_URL)
 * then shares them, so tokens minted and secrets exported in one run keep
 * working after a restart or a switch to cluster mode. Never used in production.
 */
export function loadDevSecrets(dir: string): DevSecrets {
  const file = join(dir, DEV_SECRETS_FILE);
  const stored = read(file);
  if (stored) return stored;
  const made = {
    publisherSecret: randomBytes(24).toString('hex'),
    jwtSecret: randomBytes(32).toString('hex'),
  };
  try {
    // Not recursive: the directory exists, and Node's recursive mkdir spins forever on some
    // file systems (/proc) that answer ENOENT.
    try {
      mkdirSync(join(dir, '.pushrelay'), { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    // Written aside, then linked into place: link fails if another node got
    // there first, and a reader never sees a half-written file.
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
    writeFileSync(tmp, `${JSON.stringify(made, null, 2)}\n`, { mode: 0o600 });
    try {
      linkSync(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      unlinkSync(tmp);
    }
    return read(file) ?? made;
  } catch {
    // A read-only directory: secrets for this run only, as before.
    return made;
  }
}

function read(file: string): DevSecrets | undefined {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
  const v = value as Record<string, unknown>;
  const hex = (x: unknown, length: number) =>
    typeof x === 'string' && new RegExp(`^[0-9a-f]{${length}}$`).test(x);
  if (!hex(v.publisherSecret, 48) || !hex(v.jwtSecret, 64)) return undefined;
  return { publisherSecret: v.publisherSecret as string, jwtSecret: v.jwtSecret as string, file };
}
