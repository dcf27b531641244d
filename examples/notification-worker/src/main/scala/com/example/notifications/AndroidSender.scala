package com.example.notifications

/** Sends notifications to Android devices. */
class AndroidSender extends NotificationHandler("android-sender")
