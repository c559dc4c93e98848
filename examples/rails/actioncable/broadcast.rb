# Rails' own ActionCable publishing to pushrelay: the Redis adapter with a
# channel_prefix, exactly as a Rails app's config/cable.yml sets it up, and
# the stock ActionCable.server.broadcast / Channel.broadcast_to. pushrelay,
# started with PUSHRELAY_ACTIONCABLE_PREFIX=<the same channel_prefix>,
# delivers each broadcast as event "message" on the channel named by the
# stream.
#
#   REDIS_URL=redis://localhost:6379 CHANNEL_PREFIX=shop_production ruby broadcast.rb chat_42 '{"text":"hi"}'
#
# Runs outside Rails with Debian's ruby-actioncable and ruby-redis; in a Rails
# app, config/cable.yml does the configuring below.
require "json"
require "logger"
require "base64"
require "active_support/all" # a Rails app has loaded it
require "action_cable"

ActionCable.server.config.cable = ActiveSupport::HashWithIndifferentAccess.new(
  adapter: "redis",
  url: ENV.fetch("REDIS_URL", "redis://localhost:6379"),
  channel_prefix: ENV.fetch("CHANNEL_PREFIX")
)
ActionCable.server.config.logger = Logger.new(nil)

stream = ARGV.fetch(0, "chat_42")
message = JSON.parse(ARGV.fetch(1, '{"text":"hello from Rails"}'))

# ActionCable.server.broadcast(stream, message): PUBLISHes the message's JSON
# on "<channel_prefix>:<stream>".
ActionCable.server.broadcast(stream, message)

# broadcast_to(model, message) broadcasts on "<channel name>:<model's GlobalID
# param>". Without Active Record and the globalid gem, this model answers
# to_gid_param the way GlobalID::Identification does (the URL-safe Base64 of
# its gid:// URI), so the stream is the one a Rails model would give.
class Room
  attr_reader :id

  def initialize(id)
    @id = id
  end

  def to_gid_param
    Base64.urlsafe_encode64("gid://shop/Room/#{id}", padding: false)
  end
end

class ChatChannel < ActionCable::Channel::Base; end

if ENV["ROOM"]
  ChatChannel.broadcast_to(Room.new(ENV["ROOM"]), message)
  puts ChatChannel.broadcasting_for(Room.new(ENV["ROOM"]))
end
ActionCable.server.pubsub.shutdown
