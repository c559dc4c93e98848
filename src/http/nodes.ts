import { Type } from 'typebox';
import type { Presence } from '../presence/index.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

export const NodeSchema = Type.Object({
  id: Type.String(),
  sockets: Type.Integer({ description: 'sockets connected now' }),
  users: Type.Integer({ description: 'distinct users connected now' }),
  startedAt: Type.Integer({ description: 'milliseconds since the epoch' }),
  lastSeen: Type.Integer({ description: 'last heartbeat, milliseconds since the epoch' }),
  connections: Type.Integer({ description: 'sockets accepted since start, as of lastSeen' }),
  publishes: Type.Integer({ description: 'publishes accepted since start, as of lastSeen' }),
  deliveries: Type.Integer({ description: 'messages written to sockets since start, as of lastSeen' }),
});

export const NodesAnswer = Type.Object({
  /** The node that answered. */
  node: Type.String(),
  mode: Type.Union([Type.Literal('standalone'), Type.Literal('cluster')]),
  nodes: Type.Array(NodeSchema),
});

/**
 * The live nodes of the cluster, as presence sees them (a node that stopped
 * heartbeating is gone within one presence TTL). The totals are as of each
 * node's last heartbeat, so two readings give per-node rates.
 */
export function registerNodeRoutes(
  app: HttpApp,
  presence: Presence,
  self: { readonly nodeId: string; readonly mode: 'standalone' | 'cluster' },
): void {
  app.get(
    '/v1/nodes',
    {
      // Cluster layout (node names are host names) is for operators, not for every reader.
      config: { scope: 'admin' },
      schema: { response: { 200: NodesAnswer, ...errorResponses } },
    },
    async () => {
      const nodes = await presence.nodes();
      nodes.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      return { node: self.nodeId, mode: self.mode, nodes };
    },
  );
}
