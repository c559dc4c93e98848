import { io, type Socket } from 'socket.io-client';
import type { ConnectedEvent } from '../../src/realtime/events.js';
import { token } from './env.js';

interface Position {
  offset: number;
  epoch: string;
}

/**
 * A subscriber that behaves like a careful app on the stock socket.io-client:
 * it remembers the last position seen per channel and passes it back on every
 * (re)connect, to whichever node it reconnects to. It counts what the
 * guarantees are about: every id received, duplicates, and offsets out of
 * order or skipped.
 */
export class RecoveringSubscriber {
  readonly positions: Record<string, Position> = {};
  /** message id -> times received */
  readonly received = new Map<string, number>();
  /** Every received id, in arrival order. */
  readonly sequence: string[] = [];
  /** The data of every received message, in arrival order (to spot a message published twice under two ids). */
  readonly payloads: unknown[] = [];
  outOfOrder = 0;
  /** Channels whose recovery came back `recovered: false` (history did not reach back). */
  notRecovered = 0;
  reconnects = 0;
  socket: Socket | undefined;
  private nodeIndex: number;
  private closed = false;
  private ready: Promise<void> = Promise.resolve();

  constructor(
    private readonly urls: () => string[],
    readonly user: string,
    private readonly channels: string[],
    startAt = 0,
    private readonly transports: ('websocket' | 'polling')[] = ['websocket'],
  ) {
    this.nodeIndex = startAt;
  }

  get connected(): boolean {
    return this.socket?.connected === true;
  }

  /** Resolves once connected and subscribed (with recovery) on the current node. */
  connect(): Promise<void> {
    this.ready = new Promise<void>((resolve, reject) => {
      // A node that accepts the connection but never finishes setting it up counts as a failed attempt.
      const timer = setTimeout(
        () => reject(new Error('no pushrelay:connected / subscribe answer in 10 s')),
        10_000,
      );
      const done = (err?: Error) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const urls = this.urls();
      const url = urls[this.nodeIndex % urls.length]!;
      const socket = io(url, {
        auth: (cb) => {
          void token(this.user, { channels: this.channels }).then((t) =>
            cb({ token: t, since: { ...this.positions } }),
          );
        },
        transports: this.transports,
        reconnection: false,
        forceNew: true,
      });
      this.socket = socket;
      socket.onAny((event: string, data: unknown, meta?: Position & { id: string; channel: string }) => {
        if (event.startsWith('pushrelay:') || !meta) return;
        this.payloads.push(data);
        this.record(meta);
      });
      socket.once('pushrelay:connected', (e: ConnectedEvent) => {
        this.adopt(e.channels);
        if (this.channels.length === 0) return done();
        const since = Object.fromEntries(
          this.channels.filter((c) => this.positions[c]).map((c) => [c, this.positions[c]]),
        );
        socket.emit(
          'subscribe',
          { channels: this.channels, since },
          (answer: { ok: boolean; channels: never }) => {
            if (!answer.ok) return reject(new Error(`subscribe refused: ${JSON.stringify(answer)}`));
            this.adopt(answer.channels);
            resolve();
          },
        );
      });
      socket.once('connect_error', (err) => done(err));
      socket.once('disconnect', () => {
        // Only the current socket's loss starts a reconnect, and only one at a time.
        if (this.closed || socket !== this.socket || this.retrying) return;
        // Reconnect like socket.io-client would, but to the next node, passing the positions back.
        this.reconnects++;
        this.nodeIndex++;
        setTimeout(() => void this.retry(), 100 + Math.random() * 200);
      });
    });
    return this.ready;
  }

  /** Waits for the current (re)connection to complete. */
  settled(): Promise<void> {
    return this.ready;
  }

  close(): void {
    this.closed = true;
    this.socket?.close();
  }

  /** Drops the connection without telling the relay why, like a network cut. */
  cut(): void {
    this.closed = true;
    this.socket?.close();
  }

  resume(nodeIndex?: number): Promise<void> {
    this.closed = false;
    if (nodeIndex !== undefined) this.nodeIndex = nodeIndex;
    return this.connect();
  }

  private retrying = false;

  private async retry(): Promise<void> {
    this.retrying = true;
    try {
      for (let attempt = 0; !this.closed; attempt++) {
        try {
          await this.connect();
          return;
        } catch {
          this.socket?.close();
          this.nodeIndex++;
          await new Promise((r) => setTimeout(r, Math.min(1000, 100 * 2 ** attempt)));
        }
      }
    } finally {
      this.retrying = false;
    }
  }

  private adopt(channels: Record<string, Position & { recovered: boolean }>): void {
    for (const [channel, p] of Object.entries(channels)) {
      const had = this.positions[channel];
      if (had && !p.recovered) this.notRecovered++;
      // Only ever move forward: replayed messages already advanced the position.
      if (!had || had.epoch !== p.epoch || p.offset > had.offset)
        this.positions[channel] = { offset: p.offset, epoch: p.epoch };
    }
  }

  private record(meta: Position & { id: string; channel: string }): void {
    const seen = this.received.get(meta.id) ?? 0;
    this.received.set(meta.id, seen + 1);
    this.sequence.push(meta.id);
    const had = this.positions[meta.channel];
    if (had && had.epoch === meta.epoch && meta.offset !== had.offset + 1) this.outOfOrder++;
    this.positions[meta.channel] = { offset: meta.offset, epoch: meta.epoch };
  }
}

export interface Tally {
  lost: number;
  duplicated: number;
  outOfOrder: number;
}

/** Lost and duplicated counts over a set of acknowledged ids, summed over subscribers. */
export function tally(subscribers: RecoveringSubscriber[], acknowledged: readonly string[]): Tally {
  let lost = 0;
  let duplicated = 0;
  let outOfOrder = 0;
  for (const s of subscribers) {
    for (const id of acknowledged) if (!s.received.has(id)) lost++;
    for (const n of s.received.values()) if (n > 1) duplicated += n - 1;
    outOfOrder += s.outOfOrder;
  }
  return { lost, duplicated, outOfOrder };
}

/** The XADD index of every message a subscriber received, in arrival order (entries carry `data: {i}`). */
export function xaddIndexes(s: RecoveringSubscriber): number[] {
  return s.payloads.map((d) => (d as { i: number }).i);
}

export interface XaddCounts {
  lost: number;
  duplicated: number;
  /** Subscribers that received their channel's entries out of XADD order. */
  outOfXaddOrder: number;
}

/**
 * Waits (up to `timeoutMs`) until each subscriber holds every XADD index
 * expected of it, then counts what is missing, repeated or out of order.
 */
export async function xaddCounts(
  subs: readonly RecoveringSubscriber[],
  expected: readonly (readonly number[])[],
  timeoutMs: number,
): Promise<XaddCounts> {
  const complete = () => subs.every((s, k) => new Set(xaddIndexes(s)).size >= expected[k]!.length);
  const deadline = Date.now() + timeoutMs;
  while (!complete() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  const counts: XaddCounts = { lost: 0, duplicated: 0, outOfXaddOrder: 0 };
  subs.forEach((s, k) => {
    const got = xaddIndexes(s);
    const have = new Set(got);
    counts.lost += expected[k]!.filter((i) => !have.has(i)).length;
    counts.duplicated += got.length - have.size;
    if (!got.every((x, j) => j === 0 || x > got[j - 1]!)) counts.outOfXaddOrder++;
  });
  return counts;
}
