# frozen_string_literal: true

# The fallback when a user has no tab open: the same notification, by e-mail.
class NotificationMailer < ApplicationMailer
  def notification
    @payload = params[:payload]
    user = User.find(params[:user_id])
    mail(to: user.email, subject: @payload['title'] || params[:event].to_s.humanize)
  end
end
