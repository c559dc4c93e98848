/** A node as presence sees it. */
export interface NodeInfo {
  readonly id: string;
  readonly sockets: number;
  readonly users: number;
  /** Milliseconds since the epoch. */
  readonly startedAt: number;
  readonly lastSeen: number;
  /**
   * Totals since the node started, as of `lastSeen`: two readings give rates.
   * 0 from a node that does not report them.
   */
  readonly connections: number;
  readonly publishes: number;
  readonly deliveries: number;
}

export const NO_COUNTERS: NodeCounters = { connections: 0, publishes: 0, deliveries: 0 };

/** Running totals a node reports with its heartbeat. */
export interface NodeCounters {
  /** Sockets accepted. */
  readonly connections: number;
  /** Publishes accepted (any source). */
  readonly publishes: number;
  /** Messages written to sockets (one per socket reached). */
  readonly deliveries: number;
}

/**
 * Who a socket is in a channel. Sockets of one user are one member: the
 * channel lists the user once, with the `info` of the latest socket that
 * brought some.
 */
export interface Member {
  readonly user: string;
  /**
   * The user's `user_info`: JSON text (an object from the token's `user_info`
   * claim, or Laravel Echo's `channel_data.user_info`), at most
   * `PUSHRELAY_MAX_USER_INFO_BYTES` bytes.
   */
  readonly info?: string | undefined;
}

/** A member of a channel as a read sees it: sockets counted on live nodes only. */
export interface ChannelMember extends Member {
  readonly sockets: number;
}

/** What this node has, for heartbeats and for re-registering after Redis was away. */
export interface LocalMembership {
  stats(): { sockets: number; users: number };
  /** Sockets connected to this node right now: stats().sockets without counting users. */
  connections(): number;
  /** Sockets this node has in a channel right now. */
  sockets(channel: string): number;
  /** Whether a socket of this node is in a channel right now. */
  has(channel: string, socketId: string): boolean;
  /** Every (channel, socket id, member) on this node, for channels that list members. */
  entries(): Iterable<readonly [channel: string, socketId: string, member: Member]>;
  /** Running totals, when the node keeps them. */
  counters?(): Promise<NodeCounters>;
}

/** Fields every presence event carries. */
interface EventBase {
  /** Milliseconds since the epoch, when the producing node saw the transition. */
  readonly ts: number;
  /** The node that produced the event: the one whose write caused it, or that cleaned up after a dead node. */
  readonly node: string;
}

/**
 * A transition of cluster-wide presence. Each is produced exactly once for
 * the whole cluster, by the node whose Redis write caused it (the write and the
 * decision are one script), or by the node that removed a dead node's
 * sockets. A node wrongly declared dead (a long pause) registers its sockets
 * again, which produces `user.online` / `member.added` again for them.
 *
 * - `user.*`: the user's first socket anywhere / last one gone (the user's
 *   own channel `user:<id>` occupied / vacated).
 * - `channel.*`: first / last user of a channel, for every channel that lists
 *   members except users' own channels and `$broadcast`.
 * - `member.*`: a user's first socket in a presence channel / last one gone
 *   (per user, not per socket), for channels `isPresenceChannel` accepts.
 *
 * `info` is the user's `user_info` as JSON text: the one written by the join
 * for `user.online` / `member.added`, the last one kept for `member.removed`
 * (users' own channels keep none, so `user.offline` has none).
 * `socket` names the socket whose join or leave caused a user or member event
 * (front ends leave it out of their notices); it is absent for a dead node's
 * sockets.
 */
export type PresenceEvent =
  | (EventBase & {
      readonly type: 'user.online';
      readonly user: string;
      readonly info?: string;
      readonly socket?: string;
    })
  | (EventBase & { readonly type: 'user.offline'; readonly user: string; readonly socket?: string })
  | (EventBase & { readonly type: 'channel.occupied' | 'channel.vacated'; readonly channel: string })
  | (EventBase & {
      readonly type: 'member.added' | 'member.removed';
      readonly channel: string;
      readonly user: string;
      readonly info?: string;
      readonly socket?: string;
    });

export type PresenceEventType = PresenceEvent['type'];

export const PRESENCE_EVENT_TYPES: readonly PresenceEventType[] = [
  'user.online',
  'user.offline',
  'channel.occupied',
  'channel.vacated',
  'member.added',
  'member.removed',
];

export type PresenceListener = (event: PresenceEvent) => void;

/**
 * Who is connected where, cluster-wide. Writes are per node and local-first;
 * reads count only nodes that are alive, so a node that dies without saying so
 * stops counting within one presence TTL and its sockets are removed (with
 * their transitions) right after.
 *
 * Joins and leaves are idempotent: a socket already in a channel does not
 * count twice, a socket that is not in it leaves nothing.
 */
export interface Presence {
  /** Records a socket in a channel as `member`; resolves once the write is done and its events were dispatched. */
  join(channel: string, socketId: string, member: Member): Promise<void>;
  leave(channel: string, socketId: string): Promise<void>;
  /** Sockets in each channel, cluster-wide. */
  count(channels: readonly string[]): Promise<number[]>;
  /** The same counts, synchronously: only drivers that hold every count in this process (standalone). */
  countNow?(channels: readonly string[]): number[];
  /** Sockets connected cluster-wide (what a broadcast reaches), synchronously: only drivers that see every socket (standalone). */
  connectionsNow?(): number;
  /**
   * The same count from per-channel counts hashes (node -> sockets) that were
   * read elsewhere (the publish script reads them in its own step), counting
   * only nodes alive as of the last heartbeat; undefined while this node does
   * not know yet which nodes are alive. Only drivers that keep such hashes.
   */
  countFrom?(hashes: readonly (readonly string[])[]): number[] | undefined;
  /** Users in a channel with their socket counts and `user_info`, cluster-wide, sorted by user. */
  members(channel: string): Promise<ChannelMember[]>;
  /** Live nodes. */
  nodes(): Promise<NodeInfo[]>;
  /**
   * Calls `listener` with every transition this node produces, in the order
   * they happened here. Returns the function that unsubscribes it.
   */
  onEvent(listener: PresenceListener): () => void;
  /** Leaves every channel this node still has (producing their events) and unregisters the node. */
  close(): Promise<void>;
}
