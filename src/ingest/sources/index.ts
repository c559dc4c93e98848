import type { Logger } from 'pino';
import type { Config } from '../../config/index.js';
import type { HttpApp } from '../../http/types.js';
import type { Metrics } from '../../metrics/index.js';
import type { Redis } from '../../redis/client.js';
import type { RedisNames } from '../../redis/keys.js';
import type { Ingest } from '../ingest.js';
import { actionCableRoute } from './actioncable.js';
import { anyCablePubSubRoute, anyCableStreamSpec, registerAnyCableBroadcast } from './anycable.js';
import { laravelRoute } from './laravel.js';
import { PubSubIngest } from './pubsub.js';
import { decodePublish, rawPubSubRoute } from './redis-pubsub.js';
import { StreamIngest, type StreamPipelineSpec } from './stream.js';
import { ThrottledLog } from './throttled-log.js';
import type { SourceContext } from './types.js';

export interface SourceDeps {
  readonly config: Config;
  readonly http: HttpApp;
  readonly ingest: Ingest;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly names: RedisNames;
  /** Cluster mode: the command connection, the ingest subscriber, and a way to open a connection of its own. */
  readonly redis?: {
    readonly command: Redis;
    readonly subscriber: Redis;
    readonly connect: () => Redis;
  };
}

export interface Sources {
  readonly pubsub?: PubSubIngest;
  readonly streams?: StreamIngest;
  start(): Promise<void>;
  /** Gives this node's ingest work to the others now (SIGTERM). */
  drain(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Every way into the publish path other than the relay's own HTTP routes:
 * raw `PUBLISH` and `XADD` on `<prefix>:publish`, Rails' ActionCable,
 * AnyCable's three adapters, Laravel's Redis broadcaster. Each source only turns its wire format into
 * publish bodies; ownership, ordering, refusals and metrics are shared.
 */
export function wireSources(deps: SourceDeps): Sources {
  const { config, metrics, log, names, redis } = deps;
  const ctx: SourceContext = {
    ingest: deps.ingest,
    metrics,
    log,
    refusals: new ThrottledLog(log, (source) => metrics.ingestLogSuppressed.inc({ source })),
    maxPayloadBytes: config.maxPayloadBytes,
    maxJsonDepth: config.maxJsonDepth,
  };
  if (config.anycable && config.anycableBroadcastKey !== undefined) {
    registerAnyCableBroadcast(deps.http, ctx, config.anycableBroadcastKey);
  }
  if (!redis) return { start: async () => {}, drain: async () => {}, stop: async () => {} };

  const pubsub = new PubSubIngest({
    command: redis.command,
    subscriber: redis.subscriber,
    names,
    nodeId: config.nodeId,
    ctx,
    maxInflight: config.ingestMaxInflight,
  });
  pubsub.route(rawPubSubRoute(names, config.maxJsonDepth));
  if (config.actioncablePrefix !== undefined) {
    pubsub.route(actionCableRoute(config.actioncablePrefix, config.maxJsonDepth));
  }
  const specs: StreamPipelineSpec[] = [
    {
      name: 'publish',
      source: 'stream',
      stream: names.ingest,
      field: 'body',
      decode: (text) => [decodePublish(text, config.maxJsonDepth)],
      idFor: (entry) => entry,
    },
  ];
  if (config.anycable) {
    pubsub.route(anyCablePubSubRoute(config.anycableChannel, config.maxJsonDepth));
    specs.push(anyCableStreamSpec(config.anycableChannel, config.maxJsonDepth));
  }
  if (config.echoRedisPrefix !== undefined) {
    const others = [`${config.prefix}:`];
    if (config.actioncablePrefix !== undefined) others.push(`${config.actioncablePrefix}:`);
    if (config.anycable) others.push(config.anycableChannel);
    pubsub.route(laravelRoute({ prefix: config.echoRedisPrefix, others, maxJsonDepth: config.maxJsonDepth }));
  }
  const membership = pubsub.membership;
  const streams = new StreamIngest(
    {
      command: redis.command,
      connect: redis.connect,
      names,
      nodeId: config.nodeId,
      ctx,
      partitions: config.ingestPartitions,
      deadLetters: config.ingestDeadLetters,
      // This node counts itself even while it is not a member (its subscription is down).
      members: () => membership.size + (membership.member ? 0 : 1),
    },
    specs,
    log,
  );
  return {
    pubsub,
    streams,
    async start() {
      await pubsub.start();
      streams.start();
    },
    async drain() {
      await Promise.all([pubsub.drain(), streams.drain()]);
    },
    async stop() {
      await Promise.all([pubsub.stop(), streams.stop()]);
    },
  };
}
