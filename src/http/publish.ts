import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { PublisherKey } from '../config/index.js';
import { RelayError } from '../errors.js';
import type { Ingest, PublishResult } from '../ingest/ingest.js';
import { BatchBody, PublishBody } from '../ingest/schema.js';
import { type FormBody, jsonOrString } from './body.js';
import { errorResponses, PublishResultSchema } from './schemas.js';
import type { HttpApp } from './types.js';

const ARRAY_FIELDS = new Set(['users', 'channels', 'except_users']);

/**
 * A form-encoded publish (Ruby's post_form, PHP's http_build_query, an HTML
 * form) in the JSON body's shape: list fields become arrays, `broadcast`
 * a boolean, and `data` JSON when it parses as JSON, else a string.
 */
export function formToPublish(form: FormBody, maxJsonDepth: number): Record<string, unknown> {
  const out: Record<string, unknown> = Object.create(null);
  for (const [key, value] of Object.entries(form)) {
    if (ARRAY_FIELDS.has(key)) out[key] = Array.isArray(value) ? value : [value];
    else if (key === 'broadcast' && typeof value === 'string') out[key] = /^(1|true|on|yes)$/i.test(value);
    else if (key === 'data' && typeof value === 'string') out[key] = jsonOrString(value, maxJsonDepth);
    else out[key] = value;
  }
  return out;
}

export function registerPublishRoutes(app: HttpApp, ingest: Ingest, maxJsonDepth: number): void {
  const coerceForm = async (request: FastifyRequest): Promise<void> => {
    if (request.isForm) request.body = formToPublish(request.body as FormBody, maxJsonDepth);
  };

  app.post(
    '/v1/publish',
    {
      config: { scope: 'publish', rateLimit: {} },
      preValidation: coerceForm,
      schema: {
        body: PublishBody,
        response: { 200: PublishResultSchema, ...errorResponses },
      },
    },
    async (request) => ingest.publish(request.body, 'http', { scope: keyScope(request) }),
  );

  app.post(
    '/v1/batch',
    {
      config: { scope: 'publish', rateLimit: {} },
      schema: {
        body: BatchBody,
        response: {
          200: Type.Object({
            results: Type.Array(
              Type.Intersect([Type.Object({ ok: Type.Literal(true) }), PublishResultSchema]),
            ),
          }),
          ...errorResponses,
        },
      },
    },
    async (request, reply) => {
      const results = await batchAnswer(ingest, request.body.messages, keyScope(request));
      reply.code(200);
      return { results: results.map((r) => ({ ok: true as const, ...r })) };
    },
  );
}

/** A batch's results, or the error that answers it: nothing is acknowledged unless all of it is. */
export async function batchAnswer(
  ingest: Ingest,
  messages: readonly PublishBody[],
  scope: string | undefined,
): Promise<PublishResult[]> {
  const outcomes = await ingest.publishBatch(messages, 'batch', { scope });
  const failed = outcomes.find((o) => !o.ok);
  if (failed && !failed.ok) {
    // The broker may have taken part of it before failing; a retry of the
    // batch completes it, and messages with an id are not delivered twice.
    throw new RelayError(
      failed.error.code,
      `the batch was not acknowledged: ${failed.error.message}; retry it (messages with an id are not delivered twice)`,
      failed.error.retryAfter,
    );
  }
  return outcomes.map((o) => (o.ok ? o.result : (undefined as never)));
}

/** Idempotency ids are the publisher key's own: another key using the same id neither suppresses nor answers for it. */
export function publisherScope(key: PublisherKey): string {
  return `key:${key.name}`;
}

function keyScope(request: FastifyRequest): string | undefined {
  return request.publisher ? publisherScope(request.publisher) : undefined;
}
