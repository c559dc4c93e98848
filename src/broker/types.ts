import type { Delivery, Position, Publication } from '../ingest/message.js';

/** How much history a channel keeps; from the channel's namespace options. */
export interface Retention {
  /** Messages kept (0: none, the offset still advances). */
  readonly size: number;
  /** Seconds a message stays recoverable. */
  readonly ttl: number;
}

/** One publication of a batch and where it goes. */
export interface PublishItem {
  readonly publication: Publication;
  readonly channels: readonly string[];
  readonly idempotent: boolean;
  /**
   * What the per-channel idempotency marker is kept under: the publisher's
   * id within its scope (a publisher key, a Redis source), so two publishers
   * using the same id do not suppress each other. Defaults to the publication id.
   */
  readonly key?: string;
}

/** A channel's top position, and when its newest message was published (ms; 0: never). */
export interface ChannelTop extends Position {
  readonly lastTs: number;
}

export interface HistoryEntry extends Position {
  readonly channel: string;
  readonly text: string;
  readonly ts: number;
}

export interface HistoryResult {
  /** Epoch and top offset of the channel at the time of the read. */
  readonly epoch: string;
  readonly offset: number;
  /** Entries after `after`, oldest first, at most `limit`. */
  readonly entries: readonly HistoryEntry[];
  /**
   * True when the history still reaches back to `after + 1`: nothing between
   * `after` and the first entry was trimmed or aged out.
   */
  readonly complete: boolean;
}

/**
 * Append-and-fan-out, the one write every publish ends in, plus the reads
 * recovery needs. Appending to a channel's history and publishing to its
 * subscribers are one atomic step per channel, so a subscriber never sees an
 * offset that history does not hold, nor offsets out of order.
 */
export interface Broker {
  /**
   * Appends one publication to each channel and fans it out. With
   * `idempotent`, a channel that already holds a publication with this id
   * (within the idempotency window) is left alone and answers the position it
   * was given the first time.
   */
  publish(
    publication: Publication,
    channels: readonly string[],
    idempotent: boolean,
    /** The scoped idempotency key (see PublishItem.key). */
    key?: string,
  ): Promise<Position[]>;
  /**
   * The same for many publications, in order (a batch), in as few round
   * trips as the deployment allows; answers the positions of each.
   */
  publishMany(items: readonly PublishItem[]): Promise<Position[][]>;
  /**
   * publish() answered synchronously, fanned out before it returns: only
   * brokers that hold everything in this process (standalone). `value` is
   * the publication's data already parsed, when the caller has it.
   */
  publishNow?(
    publication: Publication,
    channels: readonly string[],
    idempotent: boolean,
    key?: string,
    value?: unknown,
  ): Position[];
  /**
   * publishMany that also reads each target channel's presence counts hash
   * (node -> sockets, flattened) in the same step: one round trip for the
   * write and the online count. Undefined, having done nothing, where the
   * deployment cannot do both in one step (Redis Cluster, waiting for replicas).
   */
  publishManyCounted?(
    items: readonly PublishItem[],
  ): Promise<{ positions: Position[][]; counts: (readonly string[])[][] } | undefined>;
  /**
   * publishManyCounted for one publication without an idempotency id, the
   * usual publish: its positions and counts per channel without the batch's
   * nesting. Undefined, having done nothing, where publishManyCounted would
   * answer undefined (the deployment's kind: it does not change over the
   * broker's life, so a caller may stop asking).
   */
  publishCounted?(
    publication: Publication,
    channels: readonly string[],
    /** The publication's data already parsed, when the caller has it: this node's own sockets get it unparsed again. */
    value?: unknown,
  ): Promise<{ positions: Position[]; counts: (readonly string[])[] }> | undefined;
  /** Starts receiving deliveries for a channel on this node; resolves once none can be missed. */
  subscribe(channel: string): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  /**
   * Current top position of each channel. Reading writes nothing: a channel
   * nobody published to within its retention answers UNBORN_EPOCH, offset 0.
   */
  positions(channels: readonly string[]): Promise<ChannelTop[]>;
  history(channel: string, after: number, limit: number): Promise<HistoryResult>;
  /**
   * The message id history holds at each position, or undefined where it
   * cannot tell (offset 0, no history kept, or trimmed).
   */
  idsAt(positions: readonly { channel: string; offset: number }[]): Promise<(string | undefined)[]>;
  /**
   * Gives a channel a new epoch if it still has `expected`, and answers the
   * channel's epoch afterwards (another node may have renewed it first).
   */
  renewEpoch(channel: string, expected: string): Promise<string>;
  /**
   * Whether what this node reads from the broker may be taken as the truth
   * when it contradicts what the node delivered (a position gone back, an
   * epoch changed): with replicas to wait for, only a master that has them.
   * A master restarted empty and not yet made a replica again by Sentinel, or
   * a stale connection to one, would otherwise make a node declare history
   * lost that the real master holds. Absent: always.
   */
  trustworthy?(): Promise<boolean>;
  /** Called for every message published on a subscribed channel, in offset order per channel. */
  onDelivery(handler: (delivery: Delivery) => void): void;
  /**
   * Offered this node's own publishes to subscribed channels as soon as the
   * broker has their positions, before the publisher is answered and before
   * their copy comes back through Redis. The handler answers whether it
   * delivered one (it takes it only when it is next in order); the broker
   * then drops that copy, and the copy is delivered as usual otherwise.
   * Absent where deliveries are already synchronous (memory).
   */
  onOwnDelivery?(handler: (delivery: Delivery) => boolean): void;
  /**
   * Called when the subscription came back after an interruption: deliveries
   * may have been missed and the subscriber should catch up from history.
   */
  onResync(handler: () => void): void;
  close(): Promise<void>;
}
