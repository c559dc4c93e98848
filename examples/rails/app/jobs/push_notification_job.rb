# frozen_string_literal: true

require 'net/http'
require 'json'

# Pushes a notification to every open tab of a user, through whichever relay
# node they are connected to; e-mails them when they have no tab open.
#
#   PUSHRELAY_URL=https://app:SECRET@push.example.com
#
# Net::HTTP.post_form sends the URL's user and password as Basic credentials
# (the relay reads them as key name and secret), and the payload form-encoded.
class PushNotificationJob < ApplicationJob
  queue_as :default

  class RelayUnavailable < StandardError; end

  # 503 (Redis away) and 429 come with Retry-After; a node may be mid-deploy.
  # Retrying is safe: the relay answers before anything is half-delivered.
  retry_on RelayUnavailable, Net::OpenTimeout, Net::ReadTimeout, Errno::ECONNREFUSED,
           wait: :polynomially_longer, attempts: 5

  def perform(user_id, event, payload)
    uri = URI(ENV.fetch('PUSHRELAY_URL'))
    uri.path = "/message/#{ERB::Util.url_encode(event)}/#{ERB::Util.url_encode(user_id.to_s)}"
    res = Net::HTTP.post_form(uri, payload.transform_values(&:to_s))

    case res
    when Net::HTTPSuccess
      nil
    when Net::HTTPNotFound
      # 404 user_offline: no socket anywhere in the cluster, nothing was sent.
      raise "pushrelay: #{res.code} #{res.body}" unless error_code(res) == 'user_offline'

      NotificationMailer.with(user_id: user_id, event: event, payload: payload).notification.deliver_later
    when Net::HTTPServiceUnavailable, Net::HTTPTooManyRequests
      raise RelayUnavailable, res.body
    else
      raise "pushrelay refused the push: #{res.code} #{res.body}"
    end
  end

  private

  def error_code(res)
    JSON.parse(res.body).dig('error', 'code')
  rescue JSON::ParserError
    nil
  end
end
