import { Type } from 'typebox';
import { ERRORS } from '../errors.js';

// Response shapes shared by the routes. Fastify serializes with them, so a
// field missing here never reaches a client.

export const ErrorResponse = Type.Object({
  error: Type.Object({
    code: Type.Union(Object.keys(ERRORS).map((c) => Type.Literal(c))),
    message: Type.String(),
  }),
});

/** Error answers every route may give. */
export const errorResponses = {
  '4xx': ErrorResponse,
  '5xx': ErrorResponse,
} as const;

export const PositionSchema = Type.Object({
  offset: Type.Integer({ minimum: 0 }),
  epoch: Type.String(),
});

export const PublishResultSchema = Type.Object({
  id: Type.String(),
  online: Type.Object({ users: Type.Integer(), sockets: Type.Integer() }),
  offline: Type.Array(Type.String()),
  channels: Type.Record(Type.String(), PositionSchema),
});
