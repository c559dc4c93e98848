import type { Logger } from 'pino';
import { USER_NAMESPACE, userChannel } from '../ingest/message.js';
import {
  type Change,
  eventsOf,
  infoWithin,
  type PresenceChannelPredicate,
  PresenceEmitter,
} from './events.js';
import {
  type ChannelMember,
  type LocalMembership,
  type Member,
  NO_COUNTERS,
  type NodeInfo,
  type Presence,
  type PresenceListener,
} from './types.js';

/** A user's sockets in a channel, and the `user_info` of the latest that brought some. */
interface UserEntry {
  sockets: number;
  info: string | undefined;
}

/**
 * A channel's members. Most channels a node has are users' own, with one
 * socket each: while a channel has one socket it is kept in three fields,
 * and the maps are made when a second socket joins (two maps cost every
 * idle connection ~370 bytes).
 */
class ChannelState {
  /** Socket id -> user; undefined while the channel has had one socket only. */
  sockets: Map<string, string> | undefined = undefined;
  /** User -> sockets and latest info, made with `sockets`. */
  users: Map<string, UserEntry> | undefined = undefined;

  constructor(
    /** The channel's one socket, while `sockets` is undefined. */
    readonly soleSocket: string,
    readonly soleUser: string,
    readonly soleInfo: string | undefined,
  ) {}

  get size(): number {
    return this.sockets?.size ?? 1;
  }

  userOf(socketId: string): string | undefined {
    if (this.sockets !== undefined) return this.sockets.get(socketId);
    return socketId === this.soleSocket ? this.soleUser : undefined;
  }

  /** The maps, made from the one socket on first use. */
  maps(): { sockets: Map<string, string>; users: Map<string, UserEntry> } {
    this.sockets ??= new Map([[this.soleSocket, this.soleUser]]);
    this.users ??= new Map([[this.soleUser, { sockets: 1, info: this.soleInfo }]]);
    return { sockets: this.sockets, users: this.users };
  }

  *members(): Iterable<[string, UserEntry]> {
    if (this.users === undefined) yield [this.soleUser, { sockets: 1, info: this.soleInfo }];
    else yield* this.users;
  }
}

/**
 * How a channel is kept: its state, or, for a user's own channel whose one
 * socket is that user's and brought no `user_info` (most channels of a
 * node), just that socket's id: the member is read off the channel's name,
 * and the state is made when a second socket joins (~100 bytes less per idle
 * connection).
 */
type Entry = ChannelState | string;

const OWN_PREFIX = `${USER_NAMESPACE}:`;

/** What both drivers are given. */
export interface CommonOptions {
  readonly nodeId: string;
  readonly local: LocalMembership;
  /** Channels whose members produce `member.*` events. */
  readonly isPresenceChannel: PresenceChannelPredicate;
  /** Largest `user_info` kept, in bytes of JSON text; a larger one is dropped (the member joins without it). */
  readonly maxInfoBytes: number;
  /** Counts a `user_info` dropped for its size. */
  readonly onInfoRefused?: () => void;
}

/** Standalone presence: this process is the whole cluster. */
export class MemoryPresence implements Presence {
  private readonly channels = new Map<string, Entry>();
  private readonly startedAt = Date.now();
  private readonly emitter: PresenceEmitter;

  private readonly nodeId: string;
  private readonly local: LocalMembership;
  private readonly isPresenceChannel: PresenceChannelPredicate;
  private readonly maxInfoBytes: number;
  private readonly log: Logger | undefined;
  private readonly onInfoRefused: () => void;

  constructor(options: CommonOptions & { readonly log?: Logger }) {
    this.nodeId = options.nodeId;
    this.local = options.local;
    this.isPresenceChannel = options.isPresenceChannel;
    this.maxInfoBytes = options.maxInfoBytes;
    this.log = options.log;
    this.onInfoRefused = options.onInfoRefused ?? (() => {});
    this.emitter = new PresenceEmitter(options.log);
  }

  async join(channel: string, socketId: string, member: Member): Promise<void> {
    const state = this.stateOf(channel);
    if (state?.userOf(socketId) !== undefined) return;
    let info = member.info;
    if (!infoWithin(info, this.maxInfoBytes)) {
      this.refuseInfo(channel, member.user);
      info = undefined;
    }
    if (state === undefined) {
      const own = info === undefined && channel === userChannel(member.user);
      this.channels.set(channel, own ? socketId : new ChannelState(socketId, member.user, info));
    } else {
      this.channels.set(channel, state);
      const { sockets, users } = state.maps();
      sockets.set(socketId, member.user);
      const user = users.get(member.user);
      if (user !== undefined) {
        user.sockets++;
        if (info !== undefined) user.info = info;
        return;
      }
      users.set(member.user, { sockets: 1, info });
    }
    this.emit({
      kind: 'join',
      channel,
      user: member.user,
      info,
      userEdge: true,
      channelEdge: state === undefined,
      socket: socketId,
    });
  }

  async leave(channel: string, socketId: string): Promise<void> {
    const state = this.stateOf(channel);
    const name = state?.userOf(socketId);
    if (state === undefined || name === undefined) return;
    let info: string | undefined;
    let empty: boolean;
    if (state.sockets === undefined) {
      info = state.soleInfo;
      empty = true;
    } else {
      const { sockets, users } = state.maps();
      sockets.delete(socketId);
      const user = users.get(name)!;
      if (--user.sockets > 0) return;
      users.delete(name);
      info = user.info;
      empty = users.size === 0;
    }
    if (empty) this.channels.delete(channel);
    this.emit({
      kind: 'leave',
      channel,
      user: name,
      info,
      userEdge: true,
      channelEdge: empty,
      socket: socketId,
    });
  }

  async count(channels: readonly string[]): Promise<number[]> {
    return this.countNow(channels);
  }

  connectionsNow(): number {
    return this.local.connections();
  }

  countNow(channels: readonly string[]): number[] {
    return channels.map((c) => {
      const entry = this.channels.get(c);
      return entry === undefined ? 0 : typeof entry === 'string' ? 1 : entry.size;
    });
  }

  async members(channel: string): Promise<ChannelMember[]> {
    const out: ChannelMember[] = [];
    for (const [user, { sockets, info }] of this.stateOf(channel)?.members() ?? []) {
      out.push(info === undefined ? { user, sockets } : { user, sockets, info });
    }
    return out.sort(byUser);
  }

  async nodes(): Promise<NodeInfo[]> {
    const { sockets, users } = this.local.stats();
    const counters = (await this.local.counters?.()) ?? NO_COUNTERS;
    return [
      { id: this.nodeId, sockets, users, startedAt: this.startedAt, lastSeen: Date.now(), ...counters },
    ];
  }

  onEvent(listener: PresenceListener): () => void {
    return this.emitter.on(listener);
  }

  async close(): Promise<void> {
    for (const [channel, socketId] of [...this.local.entries()]) await this.leave(channel, socketId);
  }

  /** The channel's state; made afresh (not stored) for a channel kept as its one socket's id. */
  private stateOf(channel: string): ChannelState | undefined {
    const entry = this.channels.get(channel);
    if (typeof entry !== 'string') return entry;
    return new ChannelState(entry, channel.slice(OWN_PREFIX.length), undefined);
  }

  private emit(change: Change): void {
    this.emitter.emit(eventsOf(change, this.isPresenceChannel, this.nodeId, Date.now()));
  }

  private refuseInfo(channel: string, user: string): void {
    this.onInfoRefused();
    this.log?.warn(
      { channel, user, limit: this.maxInfoBytes },
      'user_info over the limit: member kept without it',
    );
  }
}

export function byUser(a: ChannelMember, b: ChannelMember): number {
  return a.user < b.user ? -1 : a.user > b.user ? 1 : 0;
}
