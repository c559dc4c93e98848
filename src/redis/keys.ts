// Every Redis key and channel name the relay uses is built here. Per-channel
// names put the channel in a hash tag ({...}) so that a channel's history, its
// metadata, its idempotency markers and its delivery channel always land on
// the same Redis Cluster slot, and one script can touch them all.

export interface RedisNames {
  readonly prefix: string;
  /** Stream holding the channel's history; entry ids are `<offset>-0`. */
  stream(channel: string): string;
  /** Hash: `e` epoch, `s` top offset. */
  meta(channel: string): string;
  /** Marker that a publication id was already appended to this channel; value `<offset>:<epoch>`. */
  appended(channel: string, id: string): string;
  /** Pub/sub channel carrying the channel's deliveries to the nodes that have sockets in it. */
  deliver(channel: string): string;
  /** Inverse of `deliver`; undefined for names that are not delivery channels. */
  channelOf(deliverName: string): string | undefined;
  /** Hash `<node>/<socket id>` -> user id: who is in the channel. */
  members(channel: string): string;
  /** Hash `<node>` -> socket count: how many sockets each node has in the channel. */
  counts(channel: string): string;
  /**
   * Hash user id -> socket count, cluster-wide: a user's first and last socket
   * in the channel are decided on it. Not kept for users' own channels, where
   * `members` holds one user's sockets.
   */
  users(channel: string): string;
  /** Hash user id -> `user_info` JSON text, for members that have one; not kept for users' own channels. */
  userInfo(channel: string): string;
  /** Pub/sub channel apps PUBLISH raw publish bodies on, and the name of the durable ingest stream they XADD to. */
  readonly ingest: string;
  /** Stream of ingest entries that could not be published (fields reason, entry, body). */
  readonly ingestDead: string;
  /** List of a node's console samples (JSON), newest first, trimmed to 15 minutes; expires with the node. */
  stats(node: string): string;
  /** Sorted set node -> expiry (ms, Redis clock): nodes sharing raw pub/sub ingest. */
  readonly ingestMembers: string;
  /** Hash node -> time (ms, Redis clock) from which the node handles its share. */
  readonly ingestActive: string;
  /** Pub/sub channel telling the ingest members that one left, so they read the set again at once. */
  readonly ingestMembersChanged: string;
  /** Pub/sub channel a node sends itself a probe on, to know its ingest subscription works. */
  ingestProbe(node: string): string;
  /** Marker that one node took a raw message during a membership change. */
  ingestClaim(digest: string): string;
  /** The partition count every node uses (the first node's PUSHRELAY_INGEST_PARTITIONS). */
  ingestPartitionCount(pipeline: string): string;
  /** Lease (and its fencing counter) of the node routing a pipeline's stream into partitions. */
  ingestRouterLease(pipeline: string): { readonly lease: string; readonly generation: string };
  /** Partition stream k of a pipeline; its lease and counter share its hash tag. */
  ingestPartition(pipeline: string, k: number): string;
  ingestPartitionLease(pipeline: string, k: number): { readonly lease: string; readonly generation: string };
  /** First answer to a publish with this idempotency id. */
  result(id: string): string;
  /** Sorted set node id -> last heartbeat (ms). */
  readonly nodes: string;
  /** Hash describing a node (sockets, users, started). */
  node(id: string): string;
  /** Set of channels a node has presence entries in; used to clean up after it dies. */
  nodeChannels(id: string): string;
  /** Lock taken by the node cleaning up after a dead one. */
  cleanup(id: string): string;
  /** Key prefix of @socket.io/redis-adapter's channels. */
  readonly adapter: string;
  /** Marker that a signed request was seen. */
  nonce(signature: string): string;
  /** Key prefix of the publisher rate limiter. */
  readonly rateLimit: string;
  /** List of webhook events queued for a receiver under a key (a channel, whose slot it shares). */
  webhookQueue(key: string, endpoint: string): string;
  /** Lease of the node delivering a key's events to a receiver. */
  webhookLease(key: string, endpoint: string): string;
  /** Hash `n` failed attempts, `first` failure, `next` attempt (ms) of a key's head for a receiver. */
  webhookState(key: string, endpoint: string): string;
  /** Sorted set key -> when (ms) a receiver's key is next due. */
  webhookDue(endpoint: string): string;
  /** Sorted set key -> next attempt (ms) of a receiver's keys that are retrying. */
  webhookRetrying(endpoint: string): string;
  /** Bytes of queued webhook events (every kind, per receiver), against PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES. */
  readonly webhookBytes: string;
  /** Hash dead letter id -> JSON, and the sorted set of ids by time. */
  readonly webhookDead: string;
  readonly webhookDeadIds: string;
  /** Lock of the node looking for webhook queues missing from the due sets (Redis Cluster). */
  readonly webhookSweep: string;
}

export function redisNames(prefix: string): RedisNames {
  const deliverHead = `${prefix}:{`;
  const deliverTail = '}:d';
  return {
    prefix,
    stream: (c) => `${prefix}:{${c}}:s`,
    meta: (c) => `${prefix}:{${c}}:m`,
    appended: (c, id) => `${prefix}:{${c}}:i:${id}`,
    deliver: (c) => `${deliverHead}${c}${deliverTail}`,
    channelOf: (name) =>
      name.startsWith(deliverHead) && name.endsWith(deliverTail)
        ? name.slice(deliverHead.length, -deliverTail.length)
        : undefined,
    members: (c) => `${prefix}:{${c}}:p`,
    counts: (c) => `${prefix}:{${c}}:n`,
    users: (c) => `${prefix}:{${c}}:u`,
    userInfo: (c) => `${prefix}:{${c}}:ui`,
    ingest: `${prefix}:publish`,
    ingestDead: `${prefix}:publish:dead`,
    stats: (node) => `${prefix}:stats:${node}`,
    ingestMembers: `${prefix}:{ingest}:members`,
    ingestActive: `${prefix}:{ingest}:active`,
    ingestMembersChanged: `${prefix}:ingest:members`,
    ingestProbe: (node) => `${prefix}:ingest:probe:${node}`,
    ingestClaim: (digest) => `${prefix}:ingest:claim:${digest}`,
    ingestPartitionCount: (p) => `${prefix}:ingest:${p}:partitions`,
    ingestRouterLease: (p) => ({
      lease: `${prefix}:{ingest:${p}:router}:lease`,
      generation: `${prefix}:{ingest:${p}:router}:generation`,
    }),
    ingestPartition: (p, k) => `${prefix}:{ingest:${p}:${k}}`,
    ingestPartitionLease: (p, k) => ({
      lease: `${prefix}:{ingest:${p}:${k}}:lease`,
      generation: `${prefix}:{ingest:${p}:${k}}:generation`,
    }),
    result: (id) => `${prefix}:result:${id}`,
    nodes: `${prefix}:nodes`,
    node: (id) => `${prefix}:node:${id}`,
    nodeChannels: (id) => `${prefix}:node:${id}:channels`,
    cleanup: (id) => `${prefix}:cleanup:${id}`,
    adapter: `${prefix}:sio`,
    nonce: (sig) => `${prefix}:nonce:${sig}`,
    rateLimit: `${prefix}:rl:`,
    webhookQueue: (k, e) => `${prefix}:{${k}}:wq:${e}`,
    webhookLease: (k, e) => `${prefix}:{${k}}:wl:${e}`,
    webhookState: (k, e) => `${prefix}:{${k}}:wr:${e}`,
    webhookDue: (e) => `${prefix}:webhooks:due:${e}`,
    webhookRetrying: (e) => `${prefix}:webhooks:retrying:${e}`,
    webhookBytes: `${prefix}:webhooks:bytes`,
    webhookDead: `${prefix}:{webhooks:dead}:h`,
    webhookDeadIds: `${prefix}:{webhooks:dead}:z`,
    webhookSweep: `${prefix}:webhooks:sweep`,
  };
}
