# frozen_string_literal: true

class Bid < ApplicationRecord
  belongs_to :auction
  belongs_to :user

  # after_create_commit, not after_save: the job must not run before the row
  # is visible to other connections, and a rolled-back bid notifies nobody.
  after_create_commit :notify_outbid_bidder

  private

  def notify_outbid_bidder
    previous = auction.bids.where.not(id: id).order(amount: :desc).first
    return if previous.nil? || previous.user_id == user_id

    PushNotificationJob.perform_later(
      previous.user_id.to_s,
      'outbid',
      { 'title' => 'You have been outbid', 'url' => "https://shop.example/auctions/#{auction_id}" }
    )
  end
end
