import { randomUUID } from 'node:crypto';
import {
  type Claim,
  COUNTED,
  type DeadLetter,
  type EndpointStats,
  type QueueItem,
  type WebhookQueue,
  type WebhookStats,
} from './types.js';

interface KeyState {
  readonly endpoint: string;
  readonly key: string;
  items: QueueItem[];
  lease: string | undefined;
  attempts: number;
  firstFailure: number;
  /** Not claimed before (ms): its backoff. */
  next: number;
}

export interface QueueLimits {
  /** Bytes of `COUNTED` items held at once; past it they are refused. */
  readonly maxBytes: number;
  /** Dead letters kept; the oldest go first. */
  readonly maxDeadLetters: number;
}

/** Standalone: the queues live in this process (a standalone relay's presence does too). */
export class MemoryWebhookQueue implements WebhookQueue {
  private readonly keys = new Map<string, KeyState>();
  private readonly dead = new Map<string, DeadLetter>();
  private bytes = 0;

  constructor(private readonly limits: QueueLimits) {}

  async enqueue(
    endpoints: readonly string[],
    key: string,
    item: QueueItem | undefined,
    match?: string,
  ): Promise<boolean> {
    const size = item?.tag === COUNTED ? Buffer.byteLength(item.json) : 0;
    if (size > 0 && this.bytes + size * endpoints.length > this.limits.maxBytes) return false;
    const now = Date.now();
    for (const endpoint of endpoints) {
      const id = `${endpoint}\n${key}`;
      let state = this.keys.get(id);
      const tail = state?.items.at(-1);
      if (match !== undefined && state && tail && tail.tag === match && tail.hold > now && !state.lease) {
        state.items.pop();
        if (state.items.length === 0) this.keys.delete(id);
        continue;
      }
      if (!item) continue;
      if (!state) {
        state = { endpoint, key, items: [], lease: undefined, attempts: 0, firstFailure: 0, next: 0 };
        this.keys.set(id, state);
      }
      state.items.push(item);
      this.bytes += size;
    }
    return true;
  }

  async claim(endpoint: string, now: number, keys: number, batch: number): Promise<Claim[]> {
    const out: Claim[] = [];
    for (const state of this.keys.values()) {
      if (out.length >= keys) break;
      if (state.endpoint !== endpoint || state.lease || state.next > now) continue;
      const items: QueueItem[] = [];
      for (const item of state.items) {
        if (item.hold > now || items.length >= batch) break;
        items.push(item);
      }
      if (items.length === 0) continue;
      state.lease = randomUUID();
      out.push({
        endpoint,
        key: state.key,
        items,
        attempts: state.attempts,
        firstFailure: state.firstFailure,
        token: state.lease,
      });
    }
    return out;
  }

  async ack(claim: Claim): Promise<void> {
    const state = this.owned(claim);
    if (!state) return;
    state.items.splice(0, claim.items.length);
    this.bytes -= countedBytes(claim.items);
    state.lease = undefined;
    state.attempts = 0;
    state.firstFailure = 0;
    state.next = 0;
    if (state.items.length === 0) this.keys.delete(`${claim.endpoint}\n${claim.key}`);
  }

  async retry(claim: Claim, at: number): Promise<void> {
    const state = this.owned(claim);
    if (!state) return;
    state.lease = undefined;
    state.attempts++;
    if (state.firstFailure === 0) state.firstFailure = Date.now();
    state.next = at;
  }

  async bury(claim: Claim, reason: string): Promise<void> {
    if (!this.owned(claim)) return;
    const id = randomUUID();
    this.dead.set(id, {
      id,
      endpoint: claim.endpoint,
      key: claim.key,
      ts: Date.now(),
      attempts: claim.attempts + 1,
      reason,
      items: claim.items,
    });
    while (this.dead.size > this.limits.maxDeadLetters) this.dead.delete(this.dead.keys().next().value!);
    await this.ack(claim);
  }

  async stats(endpoints: readonly string[]): Promise<WebhookStats> {
    const out: Record<string, { depth: number; retrying: number }> = {};
    for (const e of endpoints) out[e] = { depth: 0, retrying: 0 };
    for (const state of this.keys.values()) {
      const s = out[state.endpoint];
      if (!s) continue;
      s.depth++;
      if (state.attempts > 0) s.retrying++;
    }
    return {
      endpoints: out as Record<string, EndpointStats>,
      bytes: this.bytes,
      deadLetters: this.dead.size,
    };
  }

  async deadLetters(offset: number, limit: number): Promise<{ total: number; items: DeadLetter[] }> {
    const all = [...this.dead.values()].reverse();
    return { total: all.length, items: all.slice(offset, offset + limit) };
  }

  async retryDead(id: string): Promise<boolean> {
    const letter = this.dead.get(id);
    if (!letter) return false;
    this.dead.delete(id);
    // Past the byte bound too: the operator asked for these.
    for (const item of letter.items) {
      const key = `${letter.endpoint}\n${letter.key}`;
      let state = this.keys.get(key);
      if (!state) {
        state = {
          endpoint: letter.endpoint,
          key: letter.key,
          items: [],
          lease: undefined,
          attempts: 0,
          firstFailure: 0,
          next: 0,
        };
        this.keys.set(key, state);
      }
      state.items.push({ ...item, hold: 0 });
      if (item.tag === COUNTED) this.bytes += Buffer.byteLength(item.json);
    }
    return true;
  }

  async discardDead(id: string): Promise<boolean> {
    return this.dead.delete(id);
  }

  private owned(claim: Claim): KeyState | undefined {
    const state = this.keys.get(`${claim.endpoint}\n${claim.key}`);
    return state?.lease === claim.token ? state : undefined;
  }
}

export function countedBytes(items: readonly QueueItem[]): number {
  let n = 0;
  for (const item of items) if (item.tag === COUNTED) n += Buffer.byteLength(item.json);
  return n;
}
