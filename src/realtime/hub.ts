import type { Logger } from 'pino';
import type { Broker, DropReporter, HistoryEntry } from '../broker/index.js';
import { DISCONNECTS, type DisconnectReason, RelayError } from '../errors.js';
import {
  type Delivery,
  decodePublication,
  ECHO_ROOM,
  listsMembers,
  type Message,
  type Meta,
  malformedReason,
  NATIVE_ROOM,
  UNBORN_EPOCH,
  USER_NAMESPACE,
  userChannel,
  watchedChannel,
  watchRoom,
} from '../ingest/message.js';
import type { Metrics } from '../metrics/index.js';
import { infoValue, type Member, type Presence, type PresenceEvent } from '../presence/index.js';
import type { ChannelAnswer, PresenceNotice, RelayServer, RelaySocket } from './events.js';
import { fanOut } from './fanout.js';

/**
 * This node's view of one channel it has sockets in. `delivered` is the
 * highest offset written to the channel's room; everything at or below it has
 * reached every socket that was in the room, and nothing above it has.
 */
interface ChannelState {
  readonly name: string;
  epoch: string;
  delivered: number;
  /** Message id at `delivered`, when this node delivered it: checks that Redis still has what was delivered. */
  lastId: string | undefined;
  /** Publish time (ms) of the channel's newest message this node knows of; 0: none. */
  lastTs: number;
  /**
   * Resolves once the node is subscribed and knows the channel's position;
   * undefined from then on (a node holds a state per user with a socket here,
   * so a set-up channel keeps no promise and no flag of its own).
   */
  ready: Promise<void> | undefined;
  /** Live deliveries held back while the position is unknown or a gap is being filled; undefined while none are. */
  pending: Delivery[] | undefined;
  /** The gap fill in progress, if any. */
  filling: Promise<void> | undefined;
  /** Recoveries reading history right now; live deliveries wait in `pending` meanwhile. */
  holds: number;
  /**
   * attach() calls in flight. A channel is given up only when it has neither
   * a room nor one of these: a socket that leaves mid-subscribe never makes a
   * room, so its channel would otherwise stay subscribed for good.
   */
  attaching: number;
  linger: NodeJS.Timeout | undefined;
}

/** Live deliveries wait (in `pending`) behind a subscribe, a gap fill or a recovery reading history. */
function held(state: ChannelState): boolean {
  return state.ready !== undefined || state.filling !== undefined || state.holds > 0;
}

/** Entries read per history request while filling a gap. */
const FILL_BATCH = 1000;
/** How long a node stays subscribed to a channel after its last socket left (reconnects are common). */
const LINGER_MS = 5000;
const RETRY_MS = 1000;

/**
 * Moves messages from the broker to this node's sockets, exactly once and in
 * offset order per channel:
 *
 * - live deliveries at or below `delivered` are duplicates and dropped;
 * - a delivery past `delivered + 1` reveals a gap (the node's Redis
 *   subscription was interrupted), which is filled from history first;
 * - after an interruption the broker asks for a resync, and quiet channels
 *   are caught up from history too;
 * - a socket joining with a `since` position gets the missed entries from
 *   history and joins the room in the same tick as the last of them, so it
 *   sees neither a gap nor a duplicate at the seam.
 */
export class Hub {
  private readonly channels = new Map<string, ChannelState>();
  private closed = false;

  constructor(
    private readonly io: RelayServer,
    private readonly broker: Broker,
    private readonly presence: Presence,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly dropped: DropReporter = () => {},
    /** Told of each socket a delivery left bytes waiting in (the slow-consumer watch). */
    private readonly backlogged: (socket: RelaySocket) => void = () => {},
  ) {
    broker.onDelivery((d) => this.receive(d));
    broker.onOwnDelivery?.((d) => this.receiveOwn(d));
    broker.onResync(() => void this.resync());
    const adapter = io.of('/').adapter;
    adapter.on('leave-room', (room: string, id: string) => {
      if (room === id || !listsMembers(room)) return;
      io.of('/').sockets.get(id)?.data.presenceAs?.delete(room);
      this.presence.leave(room, id).catch(() => {});
    });
    adapter.on('delete-room', (room: string) => this.scheduleUnsubscribe(watchedChannel(room) ?? room));
    presence.onEvent((event) => this.notifyPresence(event));
  }
  /**
   * Laravel Echo sockets are served too (PUSHRELAY_ECHO=on): every socket is
   * then in ECHO_ROOM or NATIVE_ROOM, and each front end gets its own shape.
   */
  echo = false;
  /** Most entries a recovery may replay (the channel's history size); set by the app. */
  replayLimit: (channel: string) => number = () => 1000;
  /**
   * Longest an attach waits for its channel to be set up (subscribed, position
   * known), in ms; past it the attach fails `unavailable` while the set-up
   * goes on. A Redis that hangs without closing its connections would
   * otherwise leave the socket waiting for an answer. Set by the app.
   */
  setupTimeoutMs = Number.POSITIVE_INFINITY;
  /** Seconds a channel's history and position last after its last publish (its history TTL); set by the app. */
  retentionTtl: (channel: string) => number = () => 300;

  /**
   * Puts a socket in a channel, first replaying what it missed after `since`.
   * Resolves with the position the socket is now at.
   */
  async attach(
    socket: RelaySocket,
    channel: string,
    since?: { offset: number; epoch: string },
    /** Who the socket is in this channel, when not its token's user and `user_info` (Laravel Echo's `channel_data`). */
    member?: Member,
  ): Promise<ChannelAnswer> {
    // Counted before the first await; every way out of here (answer,
    // disconnected socket, error) gives the count back.
    const state = this.acquire(channel);
    try {
      return await this.attachTo(state, socket, since, member);
    } finally {
      this.release(state);
    }
  }

  private async attachTo(
    state: ChannelState,
    socket: RelaySocket,
    since: { offset: number; epoch: string } | undefined,
    member: Member | undefined,
  ): Promise<ChannelAnswer> {
    const channel = state.name;
    await this.setUp(state);
    if (socket.rooms.has(channel) || socket.disconnected) {
      return { offset: state.delivered, epoch: state.epoch, recovered: since !== undefined };
    }
    let entries: readonly HistoryEntry[] | undefined;
    if (since !== undefined && since.epoch === UNBORN_EPOCH && since.offset === 0) {
      // The client saw the channel before its first publish: everything since is new to it.
      since = { epoch: state.epoch, offset: 0 };
    }
    if (since !== undefined && since.epoch === state.epoch) {
      if (since.offset > state.delivered) {
        // The client saw more than this node has delivered (it came from a
        // node further ahead): bring the room up to the client's offset first.
        await this.fill(state, since.offset);
      }
      if (since.epoch === state.epoch && since.offset <= state.delivered) {
        // Live deliveries wait while history is read, so one read always
        // reaches the room's position however busy the channel is.
        state.holds++;
        try {
          entries = await this.missed(state, since.offset);
        } catch (err) {
          state.holds--;
          this.drain(state);
          throw err;
        }
        state.holds--;
      }
    }
    // From here to join() nothing awaits: the replayed entries end exactly
    // where the room's live deliveries begin.
    if (!socket.disconnected) {
      if (entries && entries.length > 0) {
        const user = socket.data.user;
        for (const e of entries) {
          const message = this.decode(e);
          if (message === undefined || message.except?.includes(user)) continue;
          socket.emit(message.event, message.data, meta(channel, e.offset, e.epoch, message));
        }
        this.metrics.deliveryRecovered.inc({ kind: 'client' }, entries.length);
      }
      if (member !== undefined && listsMembers(channel)) {
        socket.data.presenceAs ??= new Map();
        socket.data.presenceAs.set(channel, member);
      }
      socket.join(channel);
    }
    const answer = { offset: state.delivered, epoch: state.epoch, recovered: entries !== undefined };
    this.drain(state);
    if (socket.disconnected) return { ...answer, recovered: false };
    if (!listsMembers(channel)) return answer;
    // The socket receives either way; a presence write that fails is written
    // again with the node's whole membership on the next heartbeat.
    await this.presence.join(channel, socket.id, memberOf(socket, channel)).catch((err: unknown) => {
      this.log.debug({ channel, err: (err as Error).message }, 'presence write deferred');
    });
    return answer;
  }

  /**
   * Lets a socket receive a user's own channel from now on without joining
   * it (the console's tail): it is in the channel's watch room, which every
   * delivery to the channel on this node reaches too. No presence, no
   * recovery.
   */
  async watch(socket: RelaySocket, channel: string): Promise<ChannelAnswer> {
    const state = this.acquire(channel);
    try {
      await state.ready;
      if (!socket.disconnected) socket.join(watchRoom(channel));
      this.drain(state);
      return { offset: state.delivered, epoch: state.epoch, recovered: false };
    } finally {
      this.release(state);
    }
  }

  detach(socket: RelaySocket, channel: string): void {
    socket.leave(channel);
  }

  /**
   * The answer for a socket that attached earlier, as of now: the room's
   * current position. Answers are sent after every channel of a request is
   * attached, and a room keeps delivering meanwhile, so the position at
   * attach time could be older than messages the socket already got.
   */
  answerNow(channel: string, attached: ChannelAnswer): ChannelAnswer {
    const state = this.channels.get(channel);
    if (!state || state.epoch !== attached.epoch || state.delivered < attached.offset) return attached;
    return { offset: state.delivered, epoch: state.epoch, recovered: attached.recovered };
  }

  /** Channels this node is subscribed to, for metrics and tests. */
  subscribedChannels(): string[] {
    return [...this.channels.keys()];
  }

  /** Catches every channel up with history after the broker's subscription came back. */
  async resync(): Promise<void> {
    // What this node had delivered before asking: every one of those was
    // written to Redis before it was published, so a read issued now must see
    // it. (Deliveries arriving while the read is in flight are newer than the
    // read and prove nothing.)
    const seen = [...this.channels.values()]
      .filter((s) => s.ready === undefined)
      .map((state) => ({ state, epoch: state.epoch, delivered: state.delivered, lastId: state.lastId }));
    if (seen.length === 0) return;
    let positions: Awaited<ReturnType<Broker['positions']>>;
    let ids: (string | undefined)[];
    try {
      [positions, ids] = await Promise.all([
        this.broker.positions(seen.map((s) => s.state.name)),
        this.broker.idsAt(seen.map((s) => ({ channel: s.state.name, offset: s.delivered }))),
      ]);
    } catch {
      this.retryLater(() => this.resync());
      return;
    }
    // Asked once, and only when Redis contradicts what this node delivered.
    let believed: Promise<boolean> | undefined;
    for (const [i, before] of seen.entries()) {
      const { state } = before;
      const top = positions[i]!;
      const id = ids[i];
      if (state.epoch !== before.epoch) continue; // a live delivery already moved it to a new epoch
      // Another epoch while the old one's retention runs: its history is gone.
      const gone = top.epoch !== before.epoch && !this.expired(state, Date.now());
      // Same epoch, but without what this node delivered, or another message at its offset.
      const rewritten =
        top.epoch === before.epoch &&
        (top.offset < before.delivered ||
          (before.lastId !== undefined && id !== undefined && id !== before.lastId));
      if (gone || rewritten) {
        believed ??= this.believe();
        if (!(await believed)) {
          // Not the master that holds what was acknowledged (one restarted
          // empty, not yet a replica again): ask again later, declare nothing.
          this.log.warn(
            { channel: state.name },
            'Redis answers without the replicas to wait for; resync postponed',
          );
          this.retryLater(() => this.resync());
          return;
        }
        if (state.epoch !== before.epoch) continue; // moved while the question was out
      }
      if (gone) this.lost(state, top.epoch, top.offset);
      else if (top.epoch !== before.epoch) {
        // Nothing of the old epoch could be recovered anyway: take the new one and deliver all of it.
        this.renew(state, top.epoch);
        if (top.offset > 0) void this.fill(state, top.offset);
      } else if (rewritten) {
        // Redis came back without writes this node had delivered (an AOF
        // with fsync everysec can lose its last second): the offsets after
        // them are being handed out again to other messages. A new epoch
        // tells every node and client that positions from before mean nothing.
        try {
          const epoch = await this.broker.renewEpoch(state.name, before.epoch);
          this.log.error(
            { channel: state.name, delivered: before.delivered, top: top.offset },
            'Redis lost delivered messages',
          );
          if (state.epoch === before.epoch) this.lost(state, epoch, top.offset);
        } catch {
          this.retryLater(() => this.resync());
        }
      } else if (top.offset > state.delivered) {
        void this.fill(state, top.offset);
      }
    }
  }

  /** Whether Redis may be believed when it says history is gone (Broker.trustworthy); not when it cannot say. */
  private believe(): Promise<boolean> {
    return (this.broker.trustworthy?.() ?? Promise.resolve(true)).catch(() => false);
  }

  close(): void {
    this.closed = true;
    for (const s of this.channels.values()) if (s.linger) clearTimeout(s.linger);
  }

  // -------------------------------------------------------------------------

  /** The channel's state, created (and subscribed) if need be, with one more attach counted on it. */
  private acquire(channel: string): ChannelState {
    const existing = this.channels.get(channel);
    if (existing) {
      existing.attaching++;
      if (existing.linger) {
        clearTimeout(existing.linger);
        existing.linger = undefined;
      }
      return existing;
    }
    const state: ChannelState = {
      name: channel,
      epoch: '',
      delivered: 0,
      lastId: undefined,
      lastTs: 0,
      ready: undefined,
      pending: undefined,
      filling: undefined,
      holds: 0,
      attaching: 1,
      linger: undefined,
    };
    // Assigned before anything reads it: the set-up awaits before it can finish.
    const ready = (async () => {
      await this.broker.subscribe(channel);
      const [position] = await this.broker.positions([channel]);
      state.epoch = position!.epoch;
      state.delivered = position!.offset;
      state.lastTs = position!.lastTs;
      state.ready = undefined;
      this.drain(state);
    })();
    state.ready = ready;
    // A channel that could not be set up is forgotten, so the next attach tries afresh.
    ready.catch(() => {
      if (this.channels.get(channel) === state) this.channels.delete(channel);
      void this.broker.unsubscribe(channel).catch(() => {});
    });
    this.channels.set(channel, state);
    return state;
  }

  /**
   * History entries after `after` up to the room's current position, or
   * undefined when they cannot all be had (trimmed, aged out, epoch changed).
   * Called with live delivery held, so the position cannot move past the read.
   */
  private async missed(state: ChannelState, after: number): Promise<HistoryEntry[] | undefined> {
    const target = state.delivered;
    if (after === target) return [];
    const epoch = state.epoch;
    // Read to the top (bounded by the history size): a concurrent gap fill may move the room past `target`.
    const res = await this.broker.history(state.name, after, this.replayLimit(state.name));
    if (res.epoch !== epoch || state.epoch !== epoch || !res.complete) return undefined;
    // A gap fill may have run meanwhile; the read reached the top, so it covers it.
    const upTo = state.delivered;
    const entries = res.entries.filter((e) => e.offset <= upTo);
    let expected = after + 1;
    for (const e of entries) {
      if (e.offset !== expected) return undefined; // a hole: aged out or trimmed in the middle
      expected++;
    }
    return expected === upTo + 1 ? entries : undefined;
  }

  private receive(d: Delivery): void {
    const state = this.channels.get(d.channel);
    if (state === undefined) return;
    this.metrics.ingestLag.observe(Math.max(0, Date.now() - d.message.ts) / 1000);
    if (held(state)) {
      state.pending ??= [];
      state.pending.push(d);
      return;
    }
    this.process(state, d);
  }

  /**
   * This node's own publish, from the broker before its copy comes back
   * through Redis: delivered only when it is exactly the next message of a
   * settled channel (same epoch, nothing held back or being filled), so it
   * can never reorder, skip or renew anything; otherwise the copy does it all.
   */
  private receiveOwn(d: Delivery): boolean {
    const state = this.channels.get(d.channel);
    if (
      state === undefined ||
      held(state) ||
      state.pending !== undefined ||
      d.epoch !== state.epoch ||
      d.offset !== state.delivered + 1
    ) {
      return false;
    }
    this.metrics.ingestLag.observe(Math.max(0, Date.now() - d.message.ts) / 1000);
    this.emit(state, d.offset, d.epoch, d.message);
    return true;
  }

  private process(state: ChannelState, d: Delivery): void {
    if (d.epoch !== state.epoch) {
      if (this.expired(state, d.message.ts)) {
        // The channel's first publish, or its first after its retention ran
        // out: nothing was lost, the room simply moves to the new epoch.
        this.renew(state, d.epoch);
      } else {
        // History was lost (Redis restarted empty, or without its last writes):
        // positions of the old epoch mean nothing. Older entries of the stream
        // are not replayed as if new; the room starts at this message and its
        // sockets are told to resync.
        this.lost(state, d.epoch, d.offset - 1);
      }
    }
    if (d.offset <= state.delivered) {
      this.metrics.deliveryDuplicates.inc();
      return;
    }
    if (d.offset > state.delivered + 1) {
      state.pending ??= [];
      state.pending.unshift(d);
      void this.fill(state, d.offset - 1);
      return;
    }
    this.emit(state, d.offset, d.epoch, d.message);
  }

  private emit(state: ChannelState, offset: number, epoch: string, message: Message): void {
    state.delivered = offset;
    state.lastId = message.id;
    state.lastTs = Math.max(state.lastTs, message.ts);
    const rooms = this.io.of('/').adapter.rooms;
    // A user's channel also reaches its watchers' room, when there is one on this node.
    let watch: string | undefined;
    if (state.name.startsWith(`${USER_NAMESPACE}:`)) {
      watch = watchRoom(state.name);
      if (!rooms.has(watch)) watch = undefined;
    }
    const to = watch === undefined ? [state.name] : [state.name, watch];
    const except: string[] = [];
    if (message.except) for (const user of message.except) except.push(userChannel(user));
    if (message.exceptSockets) except.push(...message.exceptSockets);
    if (this.echo) {
      // Echo sockets take the same message in their own shape: emit(event, channel, data).
      // Each shape is encoded only when this node has sockets speaking it.
      if ((rooms.get(ECHO_ROOM)?.size ?? 0) > 0) {
        fanOut(
          this.io,
          to,
          [...except, NATIVE_ROOM],
          [message.event, state.name, message.data],
          this.backlogged,
        );
      }
      if ((rooms.get(NATIVE_ROOM)?.size ?? 0) > 0) {
        fanOut(
          this.io,
          to,
          [...except, ECHO_ROOM],
          [message.event, message.data, meta(state.name, offset, epoch, message)],
          this.backlogged,
        );
      }
    } else {
      fanOut(
        this.io,
        to,
        except,
        [message.event, message.data, meta(state.name, offset, epoch, message)],
        this.backlogged,
      );
    }
    const reached = rooms.get(state.name)?.size ?? 0;
    this.metrics.deliveries.inc(reached);
    this.metrics.deliveryLatency.observe(Math.max(0, Date.now() - message.ts) / 1000);
  }

  /**
   * Delivers history entries up to `target` to the room; resolves once
   * `delivered` reached it, or the gap was declared lost. While Redis is away
   * it keeps retrying, holding live deliveries back so order is kept.
   */
  private fill(state: ChannelState, target: number): Promise<void> {
    if (state.filling) {
      return state.filling.then(() => (state.delivered < target ? this.fill(state, target) : undefined));
    }
    const run = (async () => {
      while (state.delivered < target && !this.closed) {
        const epoch = state.epoch;
        let res: Awaited<ReturnType<Broker['history']>>;
        try {
          res = await this.broker.history(
            state.name,
            state.delivered,
            Math.min(FILL_BATCH, target - state.delivered),
          );
        } catch (err) {
          this.log.warn({ channel: state.name, err: (err as Error).message }, 'gap fill failed; retrying');
          await new Promise((r) => setTimeout(r, RETRY_MS).unref());
          continue;
        }
        if (res.epoch !== epoch && this.expired(state, Date.now())) {
          this.renew(state, res.epoch);
          target = res.offset;
          continue;
        }
        if (res.epoch !== epoch || !res.complete) {
          if (!(await this.believe())) {
            // As in resync: a master without its replicas is not believed; keep holding.
            this.log.warn(
              { channel: state.name },
              'Redis answers without the replicas to wait for; gap fill retried',
            );
            await new Promise((r) => setTimeout(r, RETRY_MS).unref());
            continue;
          }
          this.lost(state, res.epoch, res.offset);
          return;
        }
        if (res.entries.length === 0) return; // the target is beyond what was ever published
        for (const e of res.entries) {
          if (e.offset === state.delivered + 1) {
            const message = this.decode(e);
            if (message === undefined) {
              // Skipped, not retried: the offset is taken, and what holds it cannot be sent.
              state.delivered = e.offset;
              continue;
            }
            this.emit(state, e.offset, e.epoch, message);
            this.metrics.deliveryRecovered.inc({ kind: 'gap' });
          }
        }
      }
    })();
    state.filling = run;
    return run.finally(() => {
      state.filling = undefined;
      this.drain(state);
    });
  }

  /** Processes deliveries held back, stopping if one of them starts a new gap fill. */
  private drain(state: ChannelState): void {
    while (state.pending !== undefined && !held(state)) {
      const d = state.pending.shift()!;
      if (state.pending.length === 0) state.pending = undefined;
      this.process(state, d);
    }
  }

  /**
   * Whether the channel's current epoch has ended on its own: it was never
   * published to, or its newest message is older than its retention, so
   * Redis let its position expire and nothing in it could be recovered.
   */
  private expired(state: ChannelState, now: number): boolean {
    return state.epoch === UNBORN_EPOCH || now >= state.lastTs + this.retentionTtl(state.name) * 1000;
  }

  /** Moves the room to a new epoch from its start, without telling sockets to resync (they missed nothing). */
  private renew(state: ChannelState, epoch: string): void {
    state.epoch = epoch;
    state.delivered = 0;
    state.lastId = undefined;
    state.pending = nonEmpty(state.pending?.filter((d) => d.epoch === epoch));
  }

  /**
   * History cannot close this node's gap: jump to the channel's current
   * position and tell the channel's sockets to reconnect, so they recover
   * themselves and learn (recovered: false) that they must reload.
   */
  private lost(state: ChannelState, epoch: string, offset: number): void {
    this.log.warn({ channel: state.name, delivered: state.delivered, top: offset }, 'unrecoverable gap');
    this.metrics.deliveryGapsLost.inc();
    state.epoch = epoch;
    state.delivered = offset;
    state.lastId = undefined;
    state.pending = nonEmpty(state.pending?.filter((d) => d.epoch !== epoch || d.offset > offset));
    for (const id of this.io.of('/').adapter.rooms.get(state.name) ?? []) {
      const socket = this.io.of('/').sockets.get(id);
      if (socket) disconnect(socket, 'resync');
    }
  }

  private async setUp(state: ChannelState): Promise<void> {
    if (state.ready === undefined || !Number.isFinite(this.setupTimeoutMs)) return state.ready;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        state.ready,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new RelayError('unavailable', undefined, 1)), this.setupTimeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** An attach() ended: if it left no room behind (the socket went away meanwhile), the channel may go. */
  private release(state: ChannelState): void {
    state.attaching--;
    if (state.attaching > 0 || this.channels.get(state.name) !== state) return;
    if (!this.io.of('/').adapter.rooms.has(state.name)) this.scheduleUnsubscribe(state.name);
  }

  private scheduleUnsubscribe(room: string): void {
    const state = this.channels.get(room);
    if (state === undefined || this.closed) return;
    if (state.linger) clearTimeout(state.linger);
    state.linger = setTimeout(() => {
      state.linger = undefined;
      const rooms = this.io.of('/').adapter.rooms;
      if (
        rooms.has(room) ||
        rooms.has(watchRoom(room)) ||
        this.channels.get(room) !== state ||
        state.attaching > 0
      )
        return;
      this.channels.delete(room);
      void this.broker.unsubscribe(room).catch(() => {});
    }, LINGER_MS);
    state.linger.unref();
  }

  /**
   * A user's first socket joined a presence channel, or their last one left,
   * anywhere in the cluster: the channel's sockets on every node hear it once
   * (through the adapter), except the socket whose join caused it.
   */
  private notifyPresence(event: PresenceEvent): void {
    if (event.type !== 'member.added' && event.type !== 'member.removed') return;
    const notice: PresenceNotice = { channel: event.channel, user: event.user };
    const info = infoValue(event.info);
    if (info !== undefined) notice.user_info = info;
    let target = this.io.to(event.channel);
    if (event.socket !== undefined) target = target.except(event.socket);
    if (this.echo) target = target.except(ECHO_ROOM);
    target.emit(event.type === 'member.added' ? 'pushrelay:join' : 'pushrelay:leave', notice);
  }

  /** A history entry as a message, or undefined (dropped and counted) when it cannot be sent to a socket. */
  private decode(entry: HistoryEntry): Message | undefined {
    try {
      return decodePublication(entry.text);
    } catch (err) {
      this.dropped(malformedReason(err), entry.channel, entry.text);
      return undefined;
    }
  }

  private retryLater(fn: () => void): void {
    if (this.closed) return;
    setTimeout(fn, RETRY_MS).unref();
  }
}

/** Who a socket is in a channel's presence: its token's user and `user_info`, unless a front end said otherwise. */
export function memberOf(socket: RelaySocket, channel: string): Member {
  return socket.data.presenceAs?.get(channel) ?? { user: socket.data.user, info: socket.data.userInfo };
}

function nonEmpty<T>(list: T[] | undefined): T[] | undefined {
  return list === undefined || list.length === 0 ? undefined : list;
}

function meta(channel: string, offset: number, epoch: string, message: Message): Meta {
  return { id: message.id, channel, offset, epoch, ts: message.ts };
}

/** Tells a socket why it is being disconnected, then disconnects it the way the reason asks for. */
export function disconnect(socket: RelaySocket, reason: DisconnectReason): void {
  const d = DISCONNECTS[reason];
  socket.data.disconnectReason = reason;
  socket.emit('pushrelay:disconnect', { code: d.code, reason, message: d.message, reconnect: d.reconnect });
  if (d.reconnect) {
    // Closing the transport (not the Socket.IO session) makes socket.io-client reconnect by itself.
    socket.conn.close();
  } else {
    socket.disconnect(true);
  }
}
