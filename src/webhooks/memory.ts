import { randomUUID } from 'node:crypto';
import type { Claim, DeadLetter, EndpointStats, QueueItem, WebhookQueue, WebhookStats } from './types.js';

interface KeyState {
  readonly endpoint: string;
  readonly key: string;
  items: QueueItem[];
  lease: string | undefined;
  attempts: number;
  firstFailure: number;
  /** Not claimed before (ms): its backoff. */
  next: number;
  /** Its entry in the due heap (a newer one makes older entries stale); -1 while leased. */
  version: number;
}

/** A key to look at, at `at` (ms); stale once its state moved on (see KeyState.version). */
interface DueEntry {
  readonly at: number;
  readonly state: KeyState;
  readonly version: number;
}

/**
 * Min-heap of due entries by time, one per endpoint: a wake looks only at
 * the keys due by now, not at every key with events waiting (a backlog of
 * millions while a receiver is down).
 */
class DueHeap {
  private readonly a: DueEntry[] = [];

  get size(): number {
    return this.a.length;
  }

  peek(): DueEntry | undefined {
    return this.a[0];
  }

  push(e: DueEntry): void {
    const a = this.a;
    let i = a.push(e) - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]!.at <= e.at) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = e;
  }

  pop(): DueEntry | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (a.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const r = l + 1;
      const c = r < a.length && a[r]!.at < a[l]!.at ? r : l;
      if (a[c]!.at >= last.at) break;
      a[i] = a[c]!;
      i = c;
    }
    a[i] = last;
    return top;
  }
}

export interface QueueLimits {
  /** Bytes of event JSON queued at once (per receiver), of every kind; past it events are refused. */
  readonly maxBytes: number;
  /** Dead letters kept; the oldest go first. */
  readonly maxDeadLetters: number;
}

/** Standalone: the queues live in this process (a standalone relay's presence does too). */
export class MemoryWebhookQueue implements WebhookQueue {
  private readonly keys = new Map<string, KeyState>();
  private readonly due = new Map<string, DueHeap>();
  private readonly dead = new Map<string, DeadLetter>();
  private bytes = 0;
  private versions = 0;

  constructor(private readonly limits: QueueLimits) {}

  async enqueue(
    endpoints: readonly string[],
    key: string,
    item: QueueItem | undefined,
    match?: string,
  ): Promise<boolean> {
    const size = item ? Buffer.byteLength(item.json) : 0;
    const now = Date.now();
    // Cancels free room first; what is left must fit for every receiver (all or none).
    let pushes = 0;
    const targets: { id: string; state: KeyState | undefined }[] = [];
    for (const endpoint of endpoints) {
      const id = `${endpoint}\n${key}`;
      const state = this.keys.get(id);
      const tail = state?.items.at(-1);
      if (match !== undefined && state && tail && tail.tag === match && tail.hold > now && !state.lease) {
        state.items.pop();
        this.bytes -= Buffer.byteLength(tail.json);
        if (state.items.length === 0) this.keys.delete(id);
        continue;
      }
      if (!item) continue;
      targets.push({ id, state });
      pushes++;
    }
    if (!item || pushes === 0) return true;
    if (this.bytes + size * pushes > this.limits.maxBytes) return false;
    for (const t of targets) {
      const endpoint = t.id.slice(0, t.id.indexOf('\n'));
      let state = t.state && this.keys.get(t.id) === t.state ? t.state : undefined;
      if (!state) {
        state = newState(endpoint, key);
        this.keys.set(t.id, state);
        this.schedule(state, Math.max(item.hold, now));
      }
      state.items.push(item);
      this.bytes += size;
    }
    return true;
  }

  async claim(endpoint: string, now: number, keys: number, batch: number): Promise<Claim[]> {
    const out: Claim[] = [];
    const heap = this.due.get(endpoint);
    if (!heap) return out;
    const later: DueEntry[] = [];
    while (out.length < keys) {
      const top = heap.peek();
      if (!top || top.at > now) break;
      heap.pop();
      const state = top.state;
      if (top.version !== state.version || state.lease) continue;
      if (this.keys.get(`${endpoint}\n${state.key}`) !== state) continue;
      if (state.next > now) {
        later.push({ at: state.next, state, version: state.version });
        continue;
      }
      const items: QueueItem[] = [];
      for (const item of state.items) {
        if (item.hold > now || items.length >= batch) break;
        items.push(item);
      }
      if (items.length === 0) {
        // Its head is held (debounce): look again when it is due.
        const head = state.items[0];
        if (head) later.push({ at: head.hold, state, version: state.version });
        continue;
      }
      state.lease = randomUUID();
      state.version = -1;
      out.push({
        endpoint,
        key: state.key,
        items,
        attempts: state.attempts,
        firstFailure: state.firstFailure,
        token: state.lease,
      });
    }
    for (const e of later) heap.push(e);
    return out;
  }

  async ack(claim: Claim): Promise<void> {
    const state = this.owned(claim);
    if (!state) return;
    state.items.splice(0, claim.items.length);
    this.bytes -= jsonBytes(claim.items);
    state.lease = undefined;
    state.attempts = 0;
    state.firstFailure = 0;
    state.next = 0;
    const head = state.items[0];
    if (head) this.schedule(state, Math.max(head.hold, Date.now()));
    else this.keys.delete(`${claim.endpoint}\n${claim.key}`);
  }

  async retry(claim: Claim, at: number): Promise<void> {
    const state = this.owned(claim);
    if (!state) return;
    state.lease = undefined;
    state.attempts++;
    if (state.firstFailure === 0) state.firstFailure = Date.now();
    state.next = at;
    this.schedule(state, at);
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
    const key = `${letter.endpoint}\n${letter.key}`;
    let state = this.keys.get(key);
    if (!state) {
      state = newState(letter.endpoint, letter.key);
      this.keys.set(key, state);
      this.schedule(state, Date.now());
    }
    for (const item of letter.items) state.items.push({ ...item, hold: 0 });
    this.bytes += jsonBytes(letter.items);
    return true;
  }

  async discardDead(id: string): Promise<boolean> {
    return this.dead.delete(id);
  }

  private owned(claim: Claim): KeyState | undefined {
    const state = this.keys.get(`${claim.endpoint}\n${claim.key}`);
    return state?.lease === claim.token ? state : undefined;
  }

  /** Puts the key in its endpoint's heap at `at`; the entries it had before go stale. */
  private schedule(state: KeyState, at: number): void {
    let heap = this.due.get(state.endpoint);
    if (!heap) {
      heap = new DueHeap();
      this.due.set(state.endpoint, heap);
    }
    state.version = ++this.versions;
    heap.push({ at, state, version: state.version });
  }
}

function newState(endpoint: string, key: string): KeyState {
  return { endpoint, key, items: [], lease: undefined, attempts: 0, firstFailure: 0, next: 0, version: 0 };
}

/** Bytes the items count for against PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES: their event JSON, every kind. */
export function jsonBytes(items: readonly QueueItem[]): number {
  let n = 0;
  for (const item of items) n += Buffer.byteLength(item.json);
  return n;
}
