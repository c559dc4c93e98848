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

/** What this node has, for heartbeats and for re-registering after Redis was away. */
export interface LocalMembership {
  stats(): { sockets: number; users: number };
  /** Every (channel, socket id, user id) on this node. */
  entries(): Iterable<readonly [channel: string, socketId: string, user: string]>;
  /** Running totals, when the node keeps them. */
  counters?(): Promise<NodeCounters>;
}

/**
 * Who is connected where, cluster-wide. Writes are per node and local-first;
 * reads count only nodes that are alive, so a node that dies without saying so
 * stops counting within one presence TTL.
 */
export interface Presence {
  join(channel: string, socketId: string, user: string): Promise<void>;
  leave(channel: string, socketId: string): Promise<void>;
  /** Sockets in each channel, cluster-wide. */
  count(channels: readonly string[]): Promise<number[]>;
  /** Users in a channel with their socket counts, cluster-wide. */
  members(channel: string): Promise<Map<string, number>>;
  /** Live nodes. */
  nodes(): Promise<NodeInfo[]>;
  close(): Promise<void>;
}
