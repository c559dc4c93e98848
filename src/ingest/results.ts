import { RelayError } from '../errors.js';
import type { Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import { runBatch } from '../redis/slots.js';
import type { PublishResult } from './ingest.js';

/** A stored first answer and the digest of the publish it answered. */
export interface StoredResult {
  readonly result: PublishResult;
  /** Digest of the publish's content (see Ingest); a repeat with another digest is a conflict. */
  readonly digest: string;
}

/**
 * First answers to publishes that carried an idempotency `id`, so a repeat
 * within the window answers exactly what the first publish answered. The
 * delivery itself is deduplicated per channel by the broker; this store only
 * makes the answer the same. Ids arrive already scoped (per publisher key,
 * per Redis source).
 */
export interface ResultStore {
  /** The stored answers of these ids (absent ones are missing from the map). */
  getMany(ids: readonly string[]): Promise<Map<string, StoredResult>>;
  /** Keeps each result unless an answer for its id is already stored; returns the ones kept, in order. */
  putMany(entries: readonly (readonly [id: string, stored: StoredResult])[]): Promise<StoredResult[]>;
  close(): void;
}

export class MemoryResultStore implements ResultStore {
  private readonly results = new Map<string, { stored: StoredResult; expires: number }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly ttlMs: number) {
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const [id, r] of this.results) if (r.expires <= now) this.results.delete(id);
    }, 30_000);
    this.sweeper.unref();
  }

  async getMany(ids: readonly string[]): Promise<Map<string, StoredResult>> {
    const now = Date.now();
    const out = new Map<string, StoredResult>();
    for (const id of ids) {
      const r = this.results.get(id);
      if (r && r.expires > now) out.set(id, r.stored);
    }
    return out;
  }

  async putMany(entries: readonly (readonly [string, StoredResult])[]): Promise<StoredResult[]> {
    const now = Date.now();
    return entries.map(([id, stored]) => {
      const r = this.results.get(id);
      if (r && r.expires > now) return r.stored;
      this.results.set(id, { stored, expires: now + this.ttlMs });
      return stored;
    });
  }

  close(): void {
    clearInterval(this.sweeper);
  }
}

export class RedisResultStore implements ResultStore {
  constructor(
    private readonly redis: Redis,
    private readonly names: RedisNames,
    private readonly ttlMs: number,
  ) {}

  async getMany(ids: readonly string[]): Promise<Map<string, StoredResult>> {
    const replies = await this.call(() =>
      runBatch(
        this.redis,
        ids.map((id) => ({ key: this.names.result(id), add: (p) => p.get(this.names.result(id)) })),
      ),
    );
    const out = new Map<string, StoredResult>();
    replies.forEach(([err, text], i) => {
      if (err) throw new RelayError('unavailable', undefined, 1);
      if (typeof text === 'string') out.set(ids[i]!, parseStored(text));
    });
    return out;
  }

  async putMany(entries: readonly (readonly [string, StoredResult])[]): Promise<StoredResult[]> {
    // SET NX then GET of one key, back to back on one connection: the GET sees
    // ours, or the first answer another node stored.
    const replies = await this.call(() =>
      runBatch(
        this.redis,
        entries.flatMap(([id, stored]) => {
          const key = this.names.result(id);
          return [
            { key, add: (p) => p.set(key, JSON.stringify(stored), 'PX', this.ttlMs, 'NX') },
            { key, add: (p) => p.get(key) },
          ];
        }),
      ),
    );
    return entries.map(([, stored], i) => {
      const [err, current] = replies[i * 2 + 1]!;
      if (err) throw new RelayError('unavailable', undefined, 1);
      return typeof current === 'string' ? parseStored(current) : stored;
    });
  }

  close(): void {}

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch {
      throw new RelayError('unavailable', undefined, 1);
    }
  }
}

/** A stored answer; one written by an older version is the bare result, with no digest. */
function parseStored(text: string): StoredResult {
  const o = JSON.parse(text) as StoredResult | PublishResult;
  return 'result' in o && 'digest' in o ? o : { result: o as PublishResult, digest: '' };
}
