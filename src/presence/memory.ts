import type { Logger } from 'pino';
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

interface ChannelState {
  /** Socket id -> user. */
  readonly sockets: Map<string, string>;
  /** User -> sockets and latest info. */
  readonly users: Map<string, { sockets: number; info: string | undefined }>;
}

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
  private readonly channels = new Map<string, ChannelState>();
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
    let state = this.channels.get(channel);
    if (state === undefined) {
      state = { sockets: new Map(), users: new Map() };
      this.channels.set(channel, state);
    }
    if (state.sockets.has(socketId)) return;
    let info = member.info;
    if (!infoWithin(info, this.maxInfoBytes)) {
      this.refuseInfo(channel, member.user);
      info = undefined;
    }
    state.sockets.set(socketId, member.user);
    const user = state.users.get(member.user);
    if (user !== undefined) {
      user.sockets++;
      if (info !== undefined) user.info = info;
      return;
    }
    state.users.set(member.user, { sockets: 1, info });
    this.emit({
      kind: 'join',
      channel,
      user: member.user,
      info,
      userEdge: true,
      channelEdge: state.users.size === 1,
      socket: socketId,
    });
  }

  async leave(channel: string, socketId: string): Promise<void> {
    const state = this.channels.get(channel);
    const name = state?.sockets.get(socketId);
    if (state === undefined || name === undefined) return;
    state.sockets.delete(socketId);
    const user = state.users.get(name)!;
    if (--user.sockets > 0) return;
    state.users.delete(name);
    if (state.users.size === 0) this.channels.delete(channel);
    this.emit({
      kind: 'leave',
      channel,
      user: name,
      info: user.info,
      userEdge: true,
      channelEdge: state.users.size === 0,
      socket: socketId,
    });
  }

  async count(channels: readonly string[]): Promise<number[]> {
    return this.countNow(channels);
  }

  countNow(channels: readonly string[]): number[] {
    return channels.map((c) => this.channels.get(c)?.sockets.size ?? 0);
  }

  async members(channel: string): Promise<ChannelMember[]> {
    const out: ChannelMember[] = [];
    for (const [user, { sockets, info }] of this.channels.get(channel)?.users ?? []) {
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
