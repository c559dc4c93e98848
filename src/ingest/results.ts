import { RelayError } from '../errors.js';
import type { Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import { runBatch } from '../redis/slots.js';
import type { PublishResult } from './ingest.js';

/**
 * First answers to publishes that carried an idempotency `id`, so a repeat
 * within the window answers exactly what the first publish answered. The
 * delivery itself is deduplicated per channel by the broker; this store only
 * makes the answer the same.
 */
export interface ResultStore {
  /** The stored answers of these ids (absent ones are missing from the map). */
  getMany(ids: readonly string[]): Promise<Map<string, PublishResult>>;
  /** Keeps each result unless an answer for its id is already stored; returns the ones kept, in order. */
  putMany(entries: readonly (readonly [id: string, result: PublishResult])[]): Promise<PublishResult[]>;
  close(): void;
}

export class MemoryResultStore implements ResultStore {
  private readonly results = new Map<string, { result: PublishResult; expires: number }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly ttlMs: number) {
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const [id, r] of this.results) if (r.expires <= now) this.results.delete(id);
    }, 30_000);
    this.sweeper.unref();
  }

  async getMany(ids: readonly string[]): Promise<Map<string, PublishResult>> {
    const now = Date.now();
    const out = new Map<string, PublishResult>();
    for (const id of ids) {
      const r = this.results.get(id);
      if (r && r.expires > now) out.set(id, r.result);
    }
    return out;
  }

  async putMany(entries: readonly (readonly [string, PublishResult])[]): Promise<PublishResult[]> {
    const now = Date.now();
    return entries.map(([id, result]) => {
      const r = this.results.get(id);
      if (r && r.expires > now) return r.result;
      this.results.set(id, { result, expires: now + this.ttlMs });
      return result;
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

  async getMany(ids: readonly string[]): Promise<Map<string, PublishResult>> {
    const replies = await this.call(() =>
      runBatch(
        this.redis,
        ids.map((id) => ({ key: this.names.result(id), add: (p) => p.get(this.names.result(id)) })),
      ),
    );
    const out = new Map<string, PublishResult>();
    replies.forEach(([err, text], i) => {
      if (err) throw new RelayError('unavailable', undefined, 1);
      if (typeof text === 'string') out.set(ids[i]!, JSON.parse(text) as PublishResult);
    });
    return out;
  }

  async putMany(entries: readonly (readonly [string, PublishResult])[]): Promise<PublishResult[]> {
    // SET NX then GET of one key, back to back on one connection: the GET sees
    // ours, or the first answer another node stored.
    const replies = await this.call(() =>
      runBatch(
        this.redis,
        entries.flatMap(([id, result]) => {
          const key = this.names.result(id);
          return [
            { key, add: (p) => p.set(key, JSON.stringify(result), 'PX', this.ttlMs, 'NX') },
            { key, add: (p) => p.get(key) },
          ];
        }),
      ),
    );
    return entries.map(([, result], i) => {
      const [err, current] = replies[i * 2 + 1]!;
      if (err) throw new RelayError('unavailable', undefined, 1);
      return typeof current === 'string' ? (JSON.parse(current) as PublishResult) : result;
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
