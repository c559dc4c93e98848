import { RelayError } from '../errors.js';
import type { Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';

/** Signed requests already seen, so a captured request cannot be replayed within its window. */
export interface NonceStore {
  /** True the first time `nonce` is claimed within `ttlSeconds`, false after. */
  claim(nonce: string, ttlSeconds: number): Promise<boolean>;
  close(): void;
}

export class MemoryNonceStore implements NonceStore {
  private readonly seen = new Map<string, number>();
  private readonly sweeper: NodeJS.Timeout;

  constructor() {
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const [k, expires] of this.seen) if (expires <= now) this.seen.delete(k);
    }, 30_000);
    this.sweeper.unref();
  }

  async claim(nonce: string, ttlSeconds: number): Promise<boolean> {
    const now = Date.now();
    const expires = this.seen.get(nonce);
    if (expires !== undefined && expires > now) return false;
    this.seen.set(nonce, now + ttlSeconds * 1000);
    return true;
  }

  close(): void {
    clearInterval(this.sweeper);
  }
}

export class RedisNonceStore implements NonceStore {
  constructor(
    private readonly redis: Redis,
    private readonly names: RedisNames,
  ) {}

  async claim(nonce: string, ttlSeconds: number): Promise<boolean> {
    try {
      return (await this.redis.set(this.names.nonce(nonce), '1', 'EX', ttlSeconds, 'NX')) === 'OK';
    } catch {
      throw new RelayError('unavailable', undefined, 1);
    }
  }

  close(): void {}
}
