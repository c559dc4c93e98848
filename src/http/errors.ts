import type { FastifyError, FastifyReply } from 'fastify';
import { isRelayError, RelayError } from '../errors.js';
import { describeAjvError } from '../ingest/schema.js';
import type { Metrics } from '../metrics/index.js';
import type { HttpApp } from './types.js';

/** Every error answer, whatever raised it: { error: { code, message } }, with Retry-After where it helps. */
export function sendError(reply: FastifyReply, error: RelayError): FastifyReply {
  if (error.retryAfter !== undefined) reply.header('retry-after', String(error.retryAfter));
  return reply.code(error.status).send({ error: error.body() });
}

/** Fastify's own errors (parsing, limits, validation) in the registry's terms. */
export function toRelayError(err: unknown, bodyLimit: number, contentType?: string): RelayError {
  if (isRelayError(err)) return err;
  const e = err as FastifyError & { validationContext?: string };
  if (e.validation)
    return new RelayError('invalid_body', describeAjvError(e.validation, e.validationContext));
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new RelayError('payload_too_large', `the body is larger than ${bodyLimit} bytes`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_TYPE':
      return unsupportedMediaType(contentType);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new RelayError('invalid_json', 'the body is empty');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new RelayError('bad_request', 'Content-Length does not match the body');
    default:
      break;
  }
  const status = e.statusCode ?? 500;
  if (status === 413) return new RelayError('payload_too_large');
  if (status === 415) return unsupportedMediaType(contentType);
  if (status >= 400 && status < 500) return new RelayError('bad_request', e.message || undefined);
  return new RelayError('internal');
}

const SEND = 'send Content-Type: application/json (or application/x-www-form-urlencoded for a form)';

/** Says which Content-Type arrived, so "no header" is not mistaken for a bad body. */
function unsupportedMediaType(contentType: string | undefined): RelayError {
  if (contentType === undefined || contentType.trim() === '') {
    return new RelayError('unsupported_media_type', `the request has no Content-Type header: ${SEND}`);
  }
  const shown = contentType.split(';')[0]!.trim().slice(0, 100);
  return new RelayError('unsupported_media_type', `Content-Type ${shown} is not supported: ${SEND}`);
}

export function registerErrorHandlers(app: HttpApp, metrics: Metrics, bodyLimit: number): void {
  app.setErrorHandler((err, request, reply) => {
    const error = toRelayError(err, bodyLimit, request.headers['content-type']);
    if (error.code === 'internal') request.log.error({ err }, 'request failed');
    metrics.httpErrors.inc({ code: error.code });
    return sendError(reply, error);
  });
  app.setNotFoundHandler((request, reply) => {
    metrics.httpErrors.inc({ code: 'not_found' });
    const path = request.url.split('?')[0];
    return sendError(reply, new RelayError('not_found', `no route ${request.method} ${path}`));
  });
}
