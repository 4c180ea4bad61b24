"""Make the example datasets in this folder, deterministically (same bytes on every run).

    python examples/make_examples.py [OUTPUT_DIR]     # default: this folder

The texts were written by hand to read like real customer messages, emails and reviews: varied
length, tone and wording, typos now and then, some ambiguity, and no keyword that gives the answer
away. Each message, email core and review is its own hand-written text; the generator only adds light
recombination (an optional greeting or sign-off, a customer's name, an order number and where it
appears) and shuffles. Listings are the exception, since their price must follow their features: each
is assembled from hand-written phrasings of every feature, seller notes and blurbs, in one of eleven
listing shapes.

- labels.jsonl      a customer message -> the internal team that handles it: harbor (shipping and
                    delivery), ledger (billing, charges, refunds), keystone (account access, login,
                    2FA), forge (bugs, crashes, technical problems) or compass (pre-sales: pricing,
                    plans, discounts). The short system prompt does not list the team names, so
                    the base model cannot know them: special vocabulary, fine-tuning's clear win.
- prices.jsonl      a product listing (shop titles, spec sheets, marketplace posts, seller notes)
                    -> its retail price in US dollars ("349.00"). Prices follow category, brand
                    tier, features and condition, plus noise, so a model can learn the pattern but
                    not an answer key.
- extraction.jsonl  a customer support email -> a fixed-schema JSON object {"name", "product",
                    "issue", "urgency", "order_id"} (order_id as written, or null when absent).
- sentiment.jsonl   a short product review -> "positive" or "negative". The system prompt says
                    exactly what to answer and a small instruct model already does this well
                    zero-shot or few-shot: the example where prompting is enough.

Brands, products and people are invented, so no answer claims a real product's price. Each dataset
has one system prompt used on every line, as a real fine-tuning set would.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 20261128


def _row(system: str, user: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


def _unique(rows: list[dict]) -> list[dict]:
    """``rows`` unchanged; raises if two share a prompt (the pools below must stay distinct)."""
    seen: set[str] = set()
    for row in rows:
        text = row["messages"][1]["content"]
        if text in seen:
            raise ValueError(f"duplicate prompt: {text!r}")
        seen.add(text)
    return rows


# ---------------------------------------------------------------------------------------------
# labels.jsonl: route a customer message to an internal team code name
# ---------------------------------------------------------------------------------------------

LABEL_SYSTEM = (
    "Route the customer's message to the team that should handle it. Reply with the team name only."
)

# The teams' code names never appear in the messages. Some messages touch two topics; the label is
# the team that owns what the customer actually wants done.
ROUTES: dict[str, list[str]] = {
    # shipping & delivery
    "harbor": [
        "Tracking has said 'label created' for five days now. Has it actually left your warehouse?",
        "The driver left my parcel with 'neighbour' according to the app, but none of my neighbours have it. What now?",
        "ordered the starter kit on monday, any idea when it ships? need it before the 20th",
        "Box showed up with one corner completely crushed, like something heavy had been sat on it. The hub inside seems ok as far as I can tell, but the power adapter wasnt in there at all, so I can't even test it. Can you send one out?",
        "I moved last week and forgot to update my address before ordering. Can you redirect it to 14 Alder Row instead of the old flat?",
        "Do you deliver to the Channel Islands, or only to the mainland?",
        "My order came in two boxes but only one has turned up. The email said both went out together.",
        "Courier tried while I was at work and now wants me to collect from a depot 40 minutes away. Can it be redelivered on Saturday instead?",
        "Still waiting on order 55120. The estimated date was last Thursday and nobody has told me anything since.",
        "The link in my confirmation email goes to an error page, so I have no idea where my stuff is.",
        "Marked as delivered at 2:14pm. I was home all day. Nothing at the door, nothing in the mailroom, nothing behind the bins.",
        "Can I have it sent to a parcel locker instead of my home? I'm never in during the day.",
        "I've received someone else's order! Different name on the label and a blender inside. How do I get this back to you and get mine?",
        "Your driver threw the box over my gate and it landed in a flowerbed. Everything works, luckily, but please have a word with them.",
        "Hello! My son's birthday is on Saturday and the robot vacuum is his big present (he's eleven and obsessed with it, don't ask). Is there a faster option than standard? I'd happily pay extra if it can be here by Friday.",
        "ordered 3 door sensors, got 2. packing slip says 3.",
        "The parcel is stuck at customs and they want a commercial invoice from the sender. Can you send them whatever they need?",
        "Hello, my order went to my old office address. Is there any way to stop it before it gets there?",
        "It's been 'out for delivery' since yesterday morning. Is it lost or just running late?",
        "Do you ship to Norway at all? I couldn't see it in the list of countries.",
        "The box arrived soaking wet, it had been left out in the rain all afternoon. The packaging inside is mush. Device looks fine but I'm not thrilled.",
        "Which courier do you use for the Netherlands? I want to know whether someone needs to be home to sign.",
        "The flat number got cut off the label and the driver says 'address not found'. Please fix it before they send it back!!",
        "Parcel arrived but it's the white one, I definitely chose charcoal.",
        "Please hold my order until the 3rd. I'm away and don't want a box sitting on the doorstep for a week.",
        "Could you send the cables now and the rest of the order when the camera is back in stock? I need the cables for something else.",
        "the tracking number you gave me belongs to a parcel in a completely different city apparently",
        "Been three weeks. Three. Weeks. Where is it?",
        "Got a notification saying 'delivery exception'. What does that mean and do I need to do anything?",
        "Hi! The gift I ordered needs to go to my sister's place, not mine. I typed the wrong address. The website says it hasn't shipped yet.",
        "Outer box was fine but the inner one was open and the wall mount was missing.",
        "I'm out in the countryside and the courier says they don't cover my postcode. Is there any other way you can get it to me?",
        "Is there a way to add delivery instructions after ordering? The gate code at our building changed yesterday.",
        "Apparently my parcel was returned to sender?? I never had a delivery attempt or a card through the door. Can you send it again please.",
        "Confirmation says 3-5 working days. It's day 9 and there's still no tracking info at all.",
        "It was delivered to the wrong house. The photo in the app clearly shows a blue door and mine is green.",
        "Can you ship my second order together with the first one? Both still say processing and I'd rather not get two deliveries.",
        "The replacement for my faulty camera still hasn't arrived. Your email said it was on its way a week ago.",
        "Driver wanted a signature and ID and I wasn't home. Could it go to the post office on my street instead of back to the depot?",
        "package has been 'in transit' between two depots for 6 days. is that normal??",
        "Not a complaint exactly, more feedback. Ordered on the 2nd with next-day and it came on the 7th. Not great when you've paid for next day. The driver was lovely though, and he said the depot has been swamped. Just so you know.",
        "Hi there, we're expecting a delivery at our office reception. Will the courier call ahead? Reception closes at 5.",
        "My tracking shows the parcel went back to your warehouse. Did something go wrong with the address?",
        "Can I change the delivery from my home to my work address? It shipped this morning.",
        "I live in a building with a concierge. Is it ok to leave it with them or do I have to sign for it myself?",
        "Package came with a huge hole in the side and the inner box had been opened. Looks like somebody helped themselves to the charger.",
        "Rather than delivery, can I collect it myself from your place in town? Would save us both the hassle.",
        "my order still says processing after 4 days, when will it actually leave?",
        "Is there any way to pick a delivery time slot? I work shifts and I'm asleep half the day.",
        "We ordered 12 units for the office and they came on two different days without any warning, one lot went to reception and one to the loading bay. From what I can count, four are still missing. Can you tell me how many boxes were actually sent and where?",
        "The courier's site says 'address incomplete'. I filled in everything. Can you check what they've got on their side?",
        "Just checking: my order shows as dispatched but the email has no tracking number in it. Could you send it over?",
        "Lost parcel. Courier says it's your job to open a claim, you say it's theirs. Somebody please just sort it out.",
        "The wall bracket I added to my order never came, only the speaker did. Was it sent separately?",
        "I'm working abroad for three months. Can my order go to an address in Portugal rather than the one on file?",
        "Hello, do parcels to Ireland usually take this long? It's been twelve days since it was sent and I'm starting to worry.",
    ],
    # billing, charges, refunds
    "ledger": [
        "Why did my card get charged twice on the 3rd? Same amount, 19.99, a minute apart.",
        "I cancelled my subscription in March but you billed me again in April AND May. I want that money back.",
        "Could you send a proper invoice with our company name and tax number on it? The email receipt isn't enough for our accountant.",
        "Returned the speaker two weeks ago, your warehouse confirmed it arrived, and still no refund on my card.",
        "hey i got charged 4.99 for a 'service fee' that wasnt there at checkout, what is it",
        "Our finance team needs invoices addressed to head office rather than the branch. Can you reissue the last three?",
        "The price dropped a week after I bought the hub. Do you do price protection, or a partial refund of the difference?",
        "I'd like to change the card you take the monthly payment from. The old one expires at the end of this week.",
        "My payment keeps getting declined even though my bank says nothing is blocked. Tried two different cards.",
        "You took the yearly fee on the 1st but I switched to monthly back in December. Please correct this.",
        "Can you refund the express delivery charge? It came five days late, so I paid for nothing.",
        "There's a charge from you on my statement I don't recognise, 89.00 on 14 Feb. Nobody in our house ordered anything.",
        "How long do refunds normally take to show up? It's been 8 working days.",
        "I was charged in dollars instead of euros and my bank added a conversion fee on top. Can you fix that for the next renewal?",
        "Your renewal reminder said 49 but 59 went out of my account. What's the extra ten for?",
        "Please stop taking money from my card. I have asked three times now.",
        "I used a promo code at checkout and it showed the discount on screen, but I was charged the full price.",
        "Need a VAT receipt for order 80312 please, it's for my expenses claim.",
        "we're a registered charity and VAT exempt. can you take VAT off our invoices going forward? happy to send the certificate",
        "Got a refund for the wrong amount. I returned two items and only got money back for one of them.",
        "My bank shows a pending charge from you for an order that failed. Will it drop off by itself or do I need to do something?",
        "I upgraded from Basic to Plus halfway through the month. Why did I pay the full Plus price instead of the difference?",
        "The gift card only covered part of the order, but you charged my card for the whole amount as well.",
        "Can we pay the annual invoice by bank transfer rather than card? Our procurement system doesn't allow cards.",
        "Where can I download past invoices? The account page only shows the most recent one.",
        "We're being charged for 6 seats but there are only 4 of us using it.",
        "The free trial was supposed to last 30 days. I was charged on day 14.",
        "Your colleague on the phone promised a partial refund for the scratched lid. Nothing has come through yet.",
        "Is it possible to split the payment for a single order across two cards?",
        "Why is there tax on my invoice when I'm ordering from outside the EU?",
        "I've written to you three times about the duplicate charge in January and heard nothing back, so I've now opened a dispute with my bank. To be clear, I'm happy to withdraw it the moment you refund the second payment. I'd rather sort it out with you directly.",
        "The monthly amount went up without any notice. Is this a mistake?",
        "My direct debit failed because I switched banks. How do I pay what's outstanding so the service isn't cut off?",
        "Could I have store credit instead of the refund? I'd rather put it towards the bigger model later.",
        "My order was cancelled because it was out of stock, but the money is still gone from my account.",
        "we got 3 invoices for the same period last quarter. please credit the duplicates, our accounts team is losing their minds",
        "The student discount vanished from my renewal. I'm still a student and can send proof.",
        "Charged 12.50 for delivery even though the site said free delivery over 50, and my basket came to 64.",
        "I'd like my money back for the annual plan. I've used it for a week and it's just not what we need.",
        "Is the refund going back to the card I paid with? That card was cancelled after it got stolen.",
        "Small thing, but the invoice lists the wrong product. It says Hub Mini and we bought the Hub Max. Our auditors will ask.",
        "The refund was confirmed on the 2nd and my bank says nothing has arrived. Can you send me a transaction reference?",
        "I've been billed for the recordings add-on which I never turned on.",
        "Please send invoices to our accounts inbox from now on. They currently go to a colleague who left in June.",
        "I'm off travelling for two months from next week and the house will be empty with everything unplugged. Can you pause the monthly charges while I'm away? I'll pick it up again in autumn, I don't want to cancel and lose my old price.",
        "Charged AGAIN after I removed my card from the account?? How is that even possible",
        "What happens to the money I prepaid for the year if I drop down to the cheaper plan now?",
        "i want my money back. the thing never worked properly, i've done the resets, i've done the long calls with your tech people, i've moved the router, i've done everything. i'm done trying. how do i return it and get refunded",
        "We need our purchase order number, PO 4471, on the invoice or finance won't pay it. Can you add it?",
        "The late fee on my account looks wrong. The payment went out on the due date, I have the bank statement.",
        "Two refunds came through for the same return. I don't want to keep money that isn't mine. How do I send one back?",
        "The invoice says 1,240 but the quote we agreed with your sales rep was 1,080. I have the quote as a PDF and can forward it. Our finance team won't pay until the numbers match, so could you send a corrected invoice?",
        "Noticed two charges of 1.00 after I added my card. Is that a verification thing or real money?",
        "Can I get a receipt showing the order was paid in full? The insurance company needs one for the claim.",
        "Hi, I was charged for an order I cancelled within ten minutes of placing it. The cancellation email is right here.",
        "My partner and I both pay for the family plan by mistake, two charges every month. Can one be stopped and refunded?",
    ],
    # account access, login, password, 2FA
    "keystone": [
        "I can't get in. It says my password is wrong but I reset it ten minutes ago.",
        "New phone, and the authenticator codes didn't come across. Now I'm stuck on the six-digit code screen.",
        "The reset email never arrives. Checked spam, checked the other folders, nothing.",
        "Someone changed the email address on my account. I only noticed because of the notification. Please lock it down!",
        "how do i turn on two step verification? cant find it anywhere in settings",
        "Account locked after too many attempts. How long until I can try again?",
        "The sign-in link in your email says it has expired, even when I click it straight away.",
        "I used to log in with my work email but I left that job. Can I move everything to my personal address?",
        "The text with the login code doesn't reach me since I changed mobile provider. Same number though.",
        "My daughter set up the account with her email and she's now away at university. How do I make myself the owner?",
        "Our company switched to single sign-on. How do we get the team's existing accounts linked to it?",
        "Got an email that someone signed in from another country. That wasn't me. What should I do?",
        "I have two accounts by mistake, one from when I bought the camera and one from the app. Can they be merged?",
        "Forgot which email I signed up with. Can you find my account from my phone number or an order number?",
        "The backup codes I saved don't work any more. I'm completely locked out of two-factor.",
        "Please remove my ex-partner's access to our shared home account. I'm the one who set it up.",
        "When I enter my password it says 'account not found', even though I get your newsletters at that address.",
        "i need to change the phone number for security codes, the old number is gone",
        "Is there a way to stay signed in on the tablet? It asks me for my password every single time I open the app.",
        "A colleague left and we need access to the admin account she created. She isn't answering. What proof do you need from us?",
        "Can my partner have her own login instead of us sharing mine?",
        "I think my password was in some data breach. Can you force a reset and sign me out everywhere?",
        "Hi, I changed my email in the profile but now the login only accepts the old one. Very confused.",
        "Username forgotten, password forgotten, basically everything forgotten. Where do I even start?",
        "Every time I log in it asks me to verify my email again. I've clicked that link about six times now.",
        "How do I delete my account completely? I don't want any of my data kept.",
        "The security question answer isn't being accepted and I'm sure it's right. My first pet was definitely called Biscuit.",
        "Hello, I'm leaving the company at the end of this week and I'm currently the only owner of our organisation account. We need to transfer it to our new IT manager before Friday, otherwise nobody here can manage users. What's the process, and does she need to be invited first?",
        "The verification email doesn't come when I sign up, so I can't finish creating the account.",
        "Can I get in without the authenticator app? I'm abroad and my phone was stolen yesterday.",
        "The password rules are ridiculous, it rejects everything I try. What exactly does it want?",
        "Please unlock my account, I typed the wrong password too many times after a long weekend.",
        "After the app updated it signed me out and now says my account is disabled. I haven't done anything as far as I know.",
        "There's a device in my active sessions I don't recognise. How do I kick it out?",
        "My elderly dad can't manage the two-factor thing at all. He ends up calling me every time the code comes through and by the time he reads it out it's expired. Can it be turned off for his account, or made simpler somehow? He only uses the doorbell.",
        "I was invited to my team's workspace but the invite link says it has already been used.",
        "Fingerprint sign-in stopped working on my phone, I have to type the password every time now.",
        "Signing in with my work account just loops back to the login page. Round and round.",
        "Could you tell me which email address is on my account? I think I made a typo when I registered.",
        "hello i cant get in. tried everything. please call me",
        "How do I change my password? The settings page only shows my name and address.",
        "My account was suspended with no explanation. I'd like to know why and how to get back in.",
        "I'm the account holder and I'd like to see who else has a login to our home account.",
        "The recovery email is an old work address I can't access any more. How can I prove the account is mine?",
        "The 2FA code arrives but it always says invalid. The clock on my phone is correct, I checked.",
        "I think we've been hacked. Woke up to an email saying the password was changed, then another saying the recovery phone was changed, and neither was me. I can't get into anything now and there are cameras in our house on this account. Help!!",
        "Can I use a passkey instead of a password? I really don't want yet another password to remember.",
        "I originally signed up through a social media login but I'd like a normal email and password now. How?",
        "When I try to add a second admin it says I don't have permission, but I'm the owner.",
        "Can you reset my login? My username is my maiden name and I've since changed it.",
        "Every sign-in from our new office gets blocked as 'suspicious'. Can you trust our network somehow?",
        "My teenager knows my password. How do I sign everyone else out without changing anything else?",
        "Got an email asking me to confirm a password change I didn't ask for. Is that real or phishing?",
        "I set up the account for my mum and can't remember what password I gave it. She has the device, I'm the one locked out.",
        "Is there a way to log in with just my phone number? I never remember which email I used.",
        "Hi, the 'forgot password' button does nothing for my address, but it works for my husband's. Is my account blocked?",
    ],
    # bugs, crashes, technical problems
    "forge": [
        "The app closes itself the moment I open the camera tab. Reinstalled twice, same thing.",
        "My hub drops off the Wi-Fi every night around 2am and comes back by itself in the morning.",
        "Firmware update got stuck at 68% and now the light just blinks orange.",
        "Since the last update the temperature readings are about 3 degrees off compared to my other thermometer.",
        "getting error E-204 when I try to add a new sensor",
        "Notifications stopped completely. Motion shows up in the history but my phone never pings.",
        "The export to spreadsheet button produces an empty file, just the header row.",
        "Battery on the doorbell lasts two days now. It used to last three weeks.",
        "Live view loads a black screen with a spinning wheel, but recorded clips play fine.",
        "The graphs show yesterday's data as today. Time zone thing maybe?",
        "The smart plug clicks on and off by itself a few times an hour. There's nothing in the schedule.",
        "Your API has been returning 500 on the devices endpoint since this morning. Our integration is down.",
        "The app is painfully slow on my older tablet, like 10 seconds just to switch screens.",
        "Brand new camera won't pair. It sees the network but fails at 'registering device'.",
        "The robot vacuum's map got wiped after the update and now it thinks the kitchen is a wall.",
        "The device gets warm to the touch even when it's idle. Is that normal or should I unplug it?",
        "Two of my sensors show offline even though they're two metres from the hub with fresh batteries.",
        "Scheduled scenes don't run when my phone is off. I thought all that ran on the hub?",
        "The widget on my home screen hasn't updated since Tuesday.",
        "App crashes on launch since my phone's system update. Can't even get to the login screen.",
        "Sound cuts out on the speaker every few minutes while streaming. Other speakers in the house are fine.",
        "The thermostat screen is blank but the heating still works. Is the display dead?",
        "Voice commands worked for a week, now it just says 'device not responding'.",
        "Uploading a photo for the room cards gives 'something went wrong' and nothing else.",
        "The clips have no audio since I moved the camera to the garage.",
        "I think the desktop app leaks memory. It's using 3 GB after a day of being open.",
        "The reports page times out whenever I pick a date range longer than a month.",
        "Night mode on the camera makes everything look purple. Cleaned the lens, no change.",
        "My door lock reports 'jammed' but the door is open and the bolt moves freely.",
        "The air purifier fan runs at full blast no matter which mode I pick.",
        "Sync between my phone and my partner's is broken: changes on one never show up on the other. We both added the new lamp and now there are two of them, and when she renames a room it only changes for her. Tried logging out and back in.",
        "Getting a certificate error when I open the web dashboard at the office. Works fine at home.",
        "the kettle says it's boiled but the water is lukewarm. app and kettle disagree",
        "We had a power cut on Sunday night and since then the hub seems to have forgotten every device. The app shows an empty house. Do I really have to pair all 14 again one by one? I'd really rather not, it took me a whole afternoon the first time.",
        "Search in the app returns nothing, even for devices I can see right there in the list.",
        "The sensor says the window is open when it's shut. Moved the magnet, still wrong.",
        "Charts on the shared dashboard render as empty white boxes in the browser we use at work.",
        "The app is at the top of my phone's battery usage list even on days I don't open it.",
        "hello! the ring light on my speaker flashes red non stop. what does that mean",
        "Every time I save the heating schedule it reverts to the old one.",
        "Motion alerts go off for every passing car, even on the lowest sensitivity.",
        "I get duplicate notifications, sometimes four for the same event.",
        "The camera reboots itself roughly every hour. I can see it in the event log.",
        "My fitness tracker counts steps while I'm driving. Hundreds of them.",
        "The setup QR code won't scan. Tried three phones, good light, nothing.",
        "Our building management integration broke after you changed the webhook format last Tuesday. The payloads no longer include the device id, only a name, and names aren't unique across our sites. Was this intentional? If so, is there a new field we should be reading?",
        "My e-bike display shows error 31 and the motor won't assist anymore.",
        "It's not crashing exactly, but the app freezes for a few seconds whenever a notification comes in.",
        "Downloads of recorded clips stop at about 80% and then fail.",
        "The robot vacuum keeps saying 'wheel stuck' in the middle of an empty room.",
        "The baby monitor's sound is a second or two behind the picture, which is weirdly unsettling.",
        "Geofencing doesn't trigger. I leave home and the heating just stays on.",
        "The printable report cuts off the right-hand column on every page.",
        "We have three hubs and since Monday only the first shows up in the app. The others say 'unreachable'.",
        "The watch screen flickers whenever the brightness is below half.",
        "The app won't let me type the Wi-Fi password, the keyboard pops up and vanishes again.",
    ],
    # pre-sales: pricing, plans, discounts
    "compass": [
        "What's the difference between the Plus and the Team plan apart from the number of users?",
        "Do you do a discount for schools? We'd need about 30 units for classrooms.",
        "Thinking about getting the camera for my shop, it's a little bookshop with a back room. Does the price include cloud storage for the recordings or is that an extra monthly cost on top? And if it's extra, how much?",
        "Is there a free trial of the Team plan? We'd like to try it with a few people before committing.",
        "how much is it for 5 people for a year? the pricing page only shows monthly",
        "Before I order: will the new hub work with the motion sensors from the older kit my parents have?",
        "Any chance of a bundle deal if I buy the doorbell and two cameras together?",
        "We're a small animal shelter run by volunteers. Do you have any charity pricing?",
        "When does the Pro model come back in stock? I'd rather wait than buy the standard one.",
        "Can we get a formal quote for 120 sensors including installation? Procurement needs it on paper.",
        "Is paying yearly actually cheaper than monthly, and by how much?",
        "Do you price match? I saw the same kit for less at a shop in town.",
        "I'm comparing you with two other companies for our office (about 25 people, two floors). The feature tables all look the same to me. Could someone walk me through what's actually included in each plan and what we'd end up paying per month?",
        "Black Friday is coming up. Will there be any offers, or is the current price as good as it gets?",
        "Does the smart lock come with the keypad or is that sold separately?",
        "Is there a lifetime option, or only subscriptions? Not a fan of paying monthly forever.",
        "We manage 14 rental flats. Is there a landlord or property-manager package?",
        "What's the catch with the free tier? How many devices can I have before I need to pay?",
        "Our current plan is fine but we might add two more sites next year. Roughly what would that cost?",
        "Could we get a demo call with someone? We're deciding between you and one other supplier by the end of the month.",
        "Is the student discount available on the hardware too or just the subscription?",
        "Hi! The 2-pack seems to cost more per camera than buying two singles?? Am I reading that right?",
        "Does the Team plan include priority support, or is that an add-on?",
        "Do you have a referral scheme? A few friends want one after seeing mine.",
        "Is it worth upgrading from the first-gen hub to the new one? What's actually better?",
        "Can I rent the equipment instead of buying it outright?",
        "Would you consider a discount for a three-year commitment? We're a 40-person firm.",
        "Do the prices on the website include VAT? Hard to tell as a business customer.",
        "Will there be a newer version of the camera soon? Don't want to buy the week before an upgrade comes out.",
        "Do you sell gift cards? My brother wants one of your cameras for his birthday and I've no idea which.",
        "Which plan would suit a small café with three cameras and two staff logins?",
        "Are there refurbished or ex-display units for less? Don't need the box, just need it working.",
        "Can we buy through a reseller in our country or only from you directly?",
        "What's in the starter kit exactly? Trying to work out if I'd need extra sensors for a two-bedroom flat.",
        "Is the Plus price locked in, or will it go up after the first year?",
        "hello, do you do educational licences for the software side? we're a university lab",
        "If I buy now and the price drops next week, am I stuck with what I paid?",
        "Does the business plan cover more than one location under a single bill?",
        "Is there a cheaper version without the camera? I only need the sensors.",
        "One of your competitors includes 30 days of recordings for free. Do you have anything like that?",
        "We'd like to resell your kits to our own customers. Who do I talk to about trade pricing?",
        "Can I buy the spare battery pack on its own? Couldn't find it anywhere in the shop.",
        "Looking to kit out my parents' house: lock, doorbell, two sensors. What would that all come to?",
        "Is there a discount for healthcare workers? A friend said she got one but I can't find it on the site.",
        "Can the Team plan be bought for just two months for a project, or is it annual only?",
        "How does the family plan work? Does each person need their own device?",
        "How long is the warranty on the premium model, and is the extended one worth it?",
        "I'd like to pay for a year up front for everyone in my running club. Is there a group price?",
        "Saw an ad for 25% off but the code isn't mentioned anywhere. Is the offer still on?",
        "Does the outdoor camera cost more because of the weatherproofing, or is it basically the same hardware?",
        "Can I try the hub for 30 days and send it back if it isn't for me?",
        "we're opening 6 new stores this year. any volume pricing for cameras + subscription if we standardise on you?",
        "Is there a plan with only local storage, no cloud, and is it cheaper?",
        "Is the Team plan priced per user or per device? The page says both in different places.",
        "Any plans to sell a version for boats or caravans? I'd buy two straight away.",
        "I run a small gym, one room, about 200 members, and I want a couple of cameras plus the door sensors. The home plan looks too limited and the full business plan seems like a lot for us. Is there something in between, price-wise?",
    ],
}
LABEL_GREETINGS = ["Hi,", "Hello,", "Hi there,", "Hey,", "Hi team,", "Good morning,", "Hello!", "Afternoon,"]
LABEL_SIGNOFFS = [
    "Thanks.",
    "Thanks!",
    "Thank you.",
    "Cheers",
    "Many thanks, Ruth",
    "Thanks, Dev",
    "- Marco",
    "Ta, Jess",
    "Regards, Ines",
    "Thanks in advance, Tom",
    "Appreciate it.",
    "Cheers, Olu",
]


def make_labels(rng: random.Random) -> list[dict]:
    rows = []
    for label in sorted(ROUTES):
        for text in ROUTES[label]:
            # Light recombination, the same for every team: a greeting or a sign-off now and then.
            if text[:1].isupper() and rng.random() < 0.25:
                text = rng.choice(LABEL_GREETINGS) + rng.choice([" ", "\n"]) + text
            if rng.random() < 0.2:
                text = text + rng.choice([" ", "\n"]) + rng.choice(LABEL_SIGNOFFS)
            rows.append(_row(LABEL_SYSTEM, text, label))
    rng.shuffle(rows)
    return _unique(rows)


# ---------------------------------------------------------------------------------------------
# prices.jsonl: product listing -> retail price
# ---------------------------------------------------------------------------------------------

PRICE_SYSTEM = (
    "You estimate the retail price of a product in US dollars from its listing. "
    "Reply with the price only, as a number with two decimals, for example 349.00."
)

# brand tier -> (brands, price multiplier)
BRANDS = {
    "budget": (["Valuline", "Brisko", "Zentro", "Kovi", "Dunmore Basics"], 0.6),
    "mid": (["Northby", "Altrena", "Pellham", "Corvane", "Lumaro"], 1.0),
    "premium": (["Sterling & Hale", "Aurion", "Maison Verre", "Helixa", "Orvelle"], 1.9),
}

COLORS = [
    "black",
    "matte black",
    "white",
    "off-white",
    "graphite",
    "space grey",
    "navy",
    "midnight blue",
    "silver",
    "forest green",
    "olive",
    "sand",
    "beige",
    "red",
    "cherry red",
]
DARK = ["black", "matte black", "graphite", "space grey", "silver", "charcoal"]

# One feature value: (price multiplier, short forms for titles and spec lines, long forms for prose).
Value = tuple[float, list[str], list[str]]


class Category:
    """``attributes`` in title order: the first is what a listing's title leads with (size, capacity)."""

    def __init__(
        self,
        base: float,
        nouns: list[str],
        attributes: list[list[Value]],
        blurbs: list[str],
        *,
        pair: bool = False,
        colors: list[str] | None = None,
        renewable: bool = True,
    ):
        self.base, self.nouns, self.attributes, self.blurbs = base, nouns, attributes, blurbs
        self.pair = pair  # "a pair of earbuds"
        self.colors = colors or COLORS
        self.renewable = renewable  # nobody sells refurbished shoes


CATEGORIES: dict[str, Category] = {
    "laptop": Category(
        650,
        ["laptop", "notebook", "ultrabook"],
        [
            [
                (0.95, ['13.3"', "13.3-inch"], ["a 13.3-inch screen", 'a compact 13.3" display']),
                (1.0, ['14"', "14-inch"], ["a 14-inch screen", 'a 14" display']),
                (1.05, ['15.6"', "15.6-inch"], ["a 15.6-inch full HD screen", 'a 15.6" display']),
                (1.15, ['16"', "16-inch"], ["a 16-inch screen", 'a big 16" display']),
            ],
            [
                (0.85, ["8GB", "8GB RAM"], ["8 GB of RAM", "8 gigs of RAM"]),
                (1.0, ["16GB", "16GB RAM"], ["16 GB of RAM", "16 gigs of RAM"]),
                (1.35, ["32GB", "32GB RAM"], ["32 GB of RAM", "32 gigs of RAM"]),
            ],
            [
                (0.9, ["256GB SSD", "256GB"], ["a 256 GB SSD", "256 GB of SSD storage"]),
                (1.0, ["512GB SSD", "512GB NVMe"], ["a 512 GB SSD", "a 512 GB NVMe drive"]),
                (1.2, ["1TB SSD", "1TB"], ["a 1 TB SSD", "a full terabyte of SSD storage"]),
            ],
            [
                (1.0, ["backlit keyboard", "backlit kb"], ["a backlit keyboard"]),
                (1.12, ["touchscreen", "touch display"], ["a touchscreen", "a touch display"]),
                (
                    1.4,
                    ["dedicated GPU", "discrete graphics"],
                    ["a dedicated graphics card", "discrete graphics"],
                ),
                (1.03, ["fingerprint reader", "FP reader"], ["a fingerprint reader"]),
            ],
        ],
        [
            "Battery still holds a good charge and easily gets through a working day.",
            "Light enough to carry around all day.",
            "Fast boot, quiet fans, handles spreadsheets and video calls without any fuss.",
            "Ideal for students or working from home.",
            "The keyboard is lovely to type on.",
            "Charger included.",
            "Freshly reset, ready to set up as your own.",
        ],
        colors=[*DARK, "white", "rose gold", "midnight blue"],
    ),
    "headphones": Category(
        90,
        ["wireless headphones", "over-ear headphones", "earbuds"],
        [
            [
                (0.8, ["no ANC", "passive"], ["no noise cancelling", "passive noise isolation only"]),
                (1.3, ["ANC", "noise cancelling"], ["active noise cancelling", "proper noise cancellation"]),
            ],
            [
                (0.9, ["20h battery", "20hr"], ["a 20-hour battery", "about 20 hours per charge"]),
                (1.0, ["30h battery", "30hr"], ["a 30-hour battery", "around 30 hours per charge"]),
                (1.15, ["50h battery", "50hr"], ["a 50-hour battery", "50 hours on a single charge"]),
            ],
            [
                (1.0, ["with case", "travel case"], ["a hard travel case", "a carrying case"]),
                (
                    1.08,
                    ["multipoint", "dual pairing"],
                    ["multipoint pairing", "connection to two devices at once"],
                ),
                (1.2, ["spatial audio", "3D audio"], ["spatial audio with head tracking", "spatial audio"]),
            ],
        ],
        [
            "Comfortable enough for long flights.",
            "Great for the commute, calls are clear even on a windy street.",
            "Deep bass without drowning out vocals.",
            "Ear cushions are soft and still in good shape.",
            "Charges over USB-C, cable included.",
            "Fold flat to fit in a bag.",
        ],
        pair=True,
    ),
    "coffee maker": Category(
        70,
        ["drip coffee maker", "espresso machine", "pour-over brewer"],
        [
            [
                (0.8, ["4-cup", "4 cup"], ["a small 4-cup capacity", "room for 4 cups"]),
                (1.0, ["10-cup", "10 cup"], ["a 10-cup capacity", "room for up to 10 cups"]),
                (1.15, ["14-cup", "14 cup"], ["a large 14-cup capacity", "room for up to 14 cups"]),
            ],
            [
                (1.1, ["timer", "programmable"], ["a programmable timer", "a wake-up timer"]),
                (
                    1.6,
                    ["w/ grinder", "built-in grinder"],
                    ["a built-in burr grinder", "an integrated grinder"],
                ),
                (1.45, ["milk frother", "steam wand"], ["a milk frother", "a steam wand for milk"]),
                (1.2, ["thermal carafe", "steel carafe"], ["a thermal carafe", "an insulated steel carafe"]),
            ],
            [
                (0.85, ["plastic", "plastic body"], ["a plastic housing", "a plastic body"]),
                (
                    1.15,
                    ["stainless", "stainless steel"],
                    ["a stainless steel housing", "a brushed steel body"],
                ),
            ],
        ],
        [
            "Descaled regularly and makes a great cup.",
            "Perfect for a busy household or a small office.",
            "Easy to clean, the parts come apart without tools.",
            "Brews quickly and quietly.",
            "Fits under standard kitchen cabinets.",
            "A good first machine if you are getting into coffee.",
        ],
    ),
    "office chair": Category(
        180,
        ["office chair", "ergonomic desk chair", "task chair"],
        [
            [
                (
                    0.9,
                    ["fixed lumbar", "built-in lumbar"],
                    ["fixed lumbar support", "a built-in lumbar curve"],
                ),
                (
                    1.1,
                    ["adj. lumbar", "adjustable lumbar"],
                    ["adjustable lumbar support", "a height-adjustable lumbar pad"],
                ),
            ],
            [
                (0.85, ["fixed arms"], ["fixed armrests", "fixed arms"]),
                (1.0, ["3D arms", "3D armrests"], ["3D armrests", "three-way adjustable arms"]),
                (1.2, ["4D arms", "4D armrests"], ["4D armrests", "fully adjustable 4D arms"]),
            ],
            [
                (1.0, ["mesh", "mesh back"], ["a mesh back", "a breathable mesh backrest"]),
                (
                    1.1,
                    ["PU leather", "faux leather"],
                    ["bonded leather upholstery", "faux leather upholstery"],
                ),
                (
                    1.6,
                    ["full-grain leather", "real leather"],
                    ["full-grain leather upholstery", "real full-grain leather"],
                ),
            ],
        ],
        [
            "Saved my back during a year of working from home.",
            "Smooth castors, fine on carpet and hard floors.",
            "Tilt lock and tension knob both work.",
            "Gas lift holds its height perfectly.",
            "Supports users up to about 130 kg.",
            "Assembly takes about 20 minutes.",
        ],
    ),
    "running shoes": Category(
        85,
        ["running shoes", "trail running shoes", "road racing shoes"],
        [
            [
                (0.9, ["light cushion", "firm ride"], ["light cushioning", "a firm, responsive ride"]),
                (1.15, ["max cushion", "max-cushion"], ["max cushioning", "a plush max-cushion midsole"]),
            ],
            [
                (1.0, ["no plate"], ["no plate", "no carbon plate"]),
                (
                    1.9,
                    ["carbon plate", "carbon-plated"],
                    ["a carbon plate", "a full-length carbon fibre plate"],
                ),
            ],
            [
                (1.0, ["reflective", "reflective trim"], ["reflective details", "a reflective heel tab"]),
                (1.2, ["waterproof", "waterproof upper"], ["a waterproof upper", "a waterproof membrane"]),
                (1.0, ["wide fit", "roomy toe box"], ["a wide fit option", "a roomy toe box"]),
            ],
        ],
        [
            "True to size.",
            "Great for long runs and easy days.",
            "Grippy outsole that copes with wet pavements.",
            "Breathable and light on the foot.",
            "UK size 9.",
            "Spare laces included.",
        ],
        pair=True,
        renewable=False,
    ),
    "television": Category(
        420,
        ["LED TV", "QLED TV", "OLED TV"],
        [
            [
                (0.6, ['43"', "43-inch", "43 inch"], ["a 43-inch screen", 'a 43" panel']),
                (1.0, ['55"', "55-inch", "55 inch"], ["a 55-inch screen", 'a 55" panel']),
                (1.5, ['65"', "65-inch", "65 inch"], ["a 65-inch screen", 'a 65" panel']),
                (2.6, ['77"', "77-inch", "77 inch"], ["a huge 77-inch screen", 'a 77" panel']),
            ],
            [
                (0.7, ["1080p", "Full HD"], ["full HD (1080p) resolution", "1080p resolution"]),
                (1.0, ["4K", "4K UHD"], ["4K resolution", "4K ultra HD"]),
                (2.2, ["8K", "8K UHD"], ["8K resolution", "a native 8K panel"]),
            ],
            [
                (0.9, ["60Hz", "60 Hz"], ["a standard 60 Hz refresh rate", "a 60 Hz panel"]),
                (1.15, ["120Hz", "120 Hz"], ["a 120 Hz refresh rate for gaming", "a 120 Hz panel"]),
            ],
        ],
        [
            "Smart TV with all the usual streaming apps built in.",
            "Stand and remote included, wall-mount compatible.",
            "Picture is bright and sharp, even in a sunny room.",
            "Three HDMI inputs and an optical out.",
            "No dead pixels, no burn-in.",
            "Has a low input lag game mode.",
        ],
        colors=DARK,
    ),
    "blender": Category(
        60,
        ["countertop blender", "personal blender", "high-speed blender"],
        [
            [
                (0.8, ["600W", "600 W"], ["a 600-watt motor", "600 watts of power"]),
                (1.0, ["1000W", "1000 W"], ["a 1000-watt motor", "1,000 watts of power"]),
                (1.35, ["1500W", "1500 W"], ["a 1500-watt motor", "1,500 watts of power"]),
            ],
            [
                (0.9, ["plastic jar", "BPA-free jug"], ["a BPA-free plastic jug", "a plastic jar"]),
                (1.05, ["glass jar", "glass jug"], ["a heavy glass jug", "a glass jar"]),
                (0.95, ["2 travel cups", "2 to-go cups"], ["two travel cups", "two to-go cups with lids"]),
            ],
            [
                (1.12, ["presets", "auto programs"], ["preset programs", "smoothie and ice-crush presets"]),
                (1.05, ["self-clean", "self-cleaning"], ["a self-cleaning mode", "a self-clean setting"]),
                (1.0, ["pulse", "pulse button"], ["a pulse button", "a pulse function"]),
            ],
        ],
        [
            "Crushes ice and frozen fruit with no trouble.",
            "Makes smoothies, soups and nut butter.",
            "Blades are sharp and the seal doesn't leak.",
            "Jug and lid are dishwasher safe.",
            "Compact enough to leave out on the counter.",
            "A bit loud, as they all are, but very effective.",
        ],
    ),
    "backpack": Category(
        55,
        ["daypack", "laptop backpack", "hiking backpack"],
        [
            [
                (0.85, ["18L", "18 L"], ["an 18-litre capacity", "18 litres of space"]),
                (1.0, ["25L", "25 L"], ["a 25-litre capacity", "25 litres of space"]),
                (1.2, ["35L", "35 L"], ["a 35-litre capacity", "35 litres of space"]),
            ],
            [
                (0.85, ["polyester"], ["a polyester shell", "polyester fabric"]),
                (1.05, ["ripstop", "ripstop nylon"], ["tough ripstop nylon", "a ripstop nylon shell"]),
                (1.35, ["waxed canvas"], ["waxed cotton canvas", "a waxed canvas body"]),
            ],
            [
                (
                    1.05,
                    ["laptop sleeve", "padded sleeve"],
                    ["a padded laptop sleeve", "a padded sleeve for a 15-inch laptop"],
                ),
                (1.1, ["rain cover"], ["a stowaway rain cover", "a rain cover"]),
                (
                    1.25,
                    ["lifetime warranty", "lifetime guarantee"],
                    ["a lifetime warranty", "a lifetime guarantee"],
                ),
            ],
        ],
        [
            "Loads of pockets, including a hidden one for your passport.",
            "Comfortable padded straps and a chest strap.",
            "Fits under an aeroplane seat.",
            "Zips run smoothly, no tears or stains.",
            "Water bottle pockets on both sides.",
            "Carries well even when fully loaded.",
        ],
        renewable=False,
    ),
    "cordless drill": Category(
        95,
        ["cordless drill", "drill driver", "hammer drill"],
        [
            [
                (0.75, ["12V", "12 V"], ["a 12-volt platform", "12 V power"]),
                (1.0, ["18V", "18 V"], ["an 18-volt platform", "18 V power"]),
                (1.1, ["20V max", "20 V max"], ["a 20 V max platform", "20 V max power"]),
            ],
            [
                (0.9, ["1x 2.0Ah", "1 x 2Ah battery"], ["one 2.0 Ah battery", "a single 2 Ah battery"]),
                (1.1, ["2x 2.0Ah", "2 x 2Ah batteries"], ["two 2.0 Ah batteries", "two 2 Ah batteries"]),
                (1.4, ["2x 5.0Ah", "2 x 5Ah batteries"], ["two 5.0 Ah batteries", "two big 5 Ah batteries"]),
                (
                    0.6,
                    ["bare tool", "body only"],
                    ["no battery or charger (bare tool)", "no battery (tool only)"],
                ),
            ],
            [
                (0.9, ["brushed"], ["a brushed motor"]),
                (1.25, ["brushless"], ["a brushless motor"]),
            ],
        ],
        [
            "Two-speed gearbox and an LED work light.",
            "Comes in its carry case.",
            "Plenty of torque for decking screws.",
            "Chuck grips well, no wobble.",
            "Light enough for overhead work.",
            "Drilled a few holes for shelves, that's it.",
        ],
        colors=["black", "yellow and black", "teal", "orange", "grey and red"],
    ),
    "smartwatch": Category(
        170,
        ["smartwatch", "fitness watch", "GPS sports watch"],
        [
            [
                (0.8, ["LCD"], ["an LCD display", "an LCD screen"]),
                (1.05, ["AMOLED"], ["an AMOLED display", "a bright AMOLED screen"]),
                (
                    1.15,
                    ["always-on AMOLED", "AOD AMOLED"],
                    ["an always-on AMOLED display", "an always-on AMOLED screen"],
                ),
            ],
            [
                (0.9, ["BT only", "no GPS"], ["Bluetooth only (uses your phone's GPS)", "no built-in GPS"]),
                (1.1, ["GPS", "built-in GPS"], ["built-in GPS", "onboard GPS"]),
                (1.45, ["LTE", "GPS + LTE"], ["LTE, so it works without your phone", "LTE cellular"]),
            ],
            [
                (1.0, ["aluminium"], ["an aluminium case", "an aluminium body"]),
                (1.7, ["titanium"], ["a titanium case", "a titanium body"]),
                (0.85, ["polymer", "plastic case"], ["a polymer case", "a plastic case"]),
            ],
        ],
        [
            "Tracks heart rate, sleep and workouts.",
            "Battery lasts several days with normal use.",
            "Spare strap included.",
            "Screen protector fitted from day one.",
            "Water resistant, fine for swimming.",
            "Charging cable included.",
        ],
    ),
}


# condition -> (price multiplier, weight, ways to write it)
CONDITIONS = {
    "new": (1.0, 11, ["New", "Brand new", "New in box", "New, sealed"]),
    "renewed": (
        0.78,
        3,
        ["Renewed", "Refurbished, like new", "Certified refurbished", "Renewed (excellent)"],
    ),
    "open box": (0.88, 3, ["Open box", "Open box, never used", "Opened but unused"]),
    "used": (0.65, 4, ["Used, good condition", "Pre-owned", "Used - good", "Second hand, works perfectly"]),
}

# What a seller adds, by condition (a new item's listing often does not say "new" at all).
SELLER_NOTES = {
    "new": [
        "Unwanted gift, still in the shrink wrap.",
        "Bought two by mistake, this is the spare.",
        "Never opened, receipt available.",
        "Won it in a raffle and already have one.",
        "Full manufacturer warranty.",
        "brand new never used, reciept included",
    ],
    "renewed": [
        "Professionally refurbished and tested, 12-month warranty.",
        "Refurbished by the manufacturer, comes in a plain box.",
        "Fully checked, cleaned and regraded, no visible marks.",
        "Renewed unit with new accessories.",
        "Refurb'd, all functions tested.",
    ],
    "open box": [
        "Box was opened to check the contents, never used.",
        "Customer return, all accessories and manuals present.",
        "Opened, plugged in once, boxed back up.",
        "Ex-display, the packaging is a little tatty.",
        "open box return, everything still in its plastic",
    ],
    "used": [
        "A few light scuffs, works perfectly.",
        "Used for about a year, well looked after.",
        "Selling because I upgraded.",
        "Some wear on the edges, nothing that affects use.",
        "Fully working, no box.",
        "Moving abroad, need it gone.",
        "Has a small scratch on one side, see photos.",
        "good condition, some signs of use but nothing major",
    ],
}
LOGISTICS = [
    "Collection from near the station, or I can post at cost.",
    "Ships within 2 business days.",
    "Free returns within 30 days.",
    "Cash on collection preferred.",
    "Can post, buyer pays shipping.",
    "Dispatched same day if ordered before 2pm.",
    "Price is firm, no silly offers please.",
    "Smoke-free, pet-free home.",
    "Local pickup only.",
    "Tracked shipping included.",
    "Happy to answer any questions.",
    "pick up only, no time wasters",
]
MODEL_WORDS = [
    "Arc",
    "Vela",
    "Nimbus",
    "Ridge",
    "Kite",
    "Tern",
    "Atlas",
    "Flint",
    "Cove",
    "Mira",
    "Sola",
    "Drift",
]
LETTERS = "ABCDEFGHJKLMNPRSTVXZ"


def _model(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return f"{rng.choice(LETTERS)}{rng.choice(LETTERS)}-{rng.randint(100, 990)}"
    if kind == 1:
        return f"{rng.choice(MODEL_WORDS)} {rng.randint(2, 9)}"
    return f"{rng.choice(MODEL_WORDS)}{rng.randint(10, 99)}{rng.choice(['', 'X', 'S', 'e'])}"


def _a(noun: str, pair: bool) -> str:
    """'a pair of earbuds', 'an OLED TV', 'a laptop'."""
    if pair:
        return f"a pair of {noun}"
    return ("an " if noun[0] in "aeiouAEIO" or noun.startswith("LED") else "a ") + noun


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1]


def _bare(phrase: str) -> str:
    """A long form without its article, capitalised, for a bullet: 'a 55-inch screen' -> '55-inch screen'."""
    for article in ("a ", "an "):
        if phrase.startswith(article):
            phrase = phrase[len(article) :]
    return phrase[:1].upper() + phrase[1:]


def _listing(rng: random.Random, c: dict) -> str:
    """One listing in one of several shapes: shop titles, spec sheets, marketplace posts, shop copy.
    Every shape names every feature (the price depends on all of them) and the condition when not new."""
    short, long, brand, model, noun, color = (
        c["short"],
        c["long"],
        c["brand"],
        c["model"],
        c["noun"],
        c["color"],
    )
    cond, is_new, note, blurb, pair = c["cond"], c["is_new"], c["note"], c["blurb"], c["pair"]
    title_noun = " ".join(w if w.isupper() else w.capitalize() for w in noun.split())
    has = "They have" if pair else "It has"
    style = rng.randrange(11)
    if style == 0:  # shop title
        tag = "" if is_new else f" ({cond})"
        return f"{brand} {model} {short[0]} {title_noun} - {', '.join(short[1:])} - {color.title()}{tag}"
    if style == 1:  # marketplace post
        what = f"{brand} {noun}" if pair else f"{brand} {model} {noun}"
        if is_new:
            text = f"{rng.choice(['Selling', 'For sale:'])} {_a(what, pair)}. {has} {_and(long)}, in {color}."
        else:
            opener = rng.choice(["Selling my", "For sale, my", "Letting go of my"])
            text = f"{opener} {what}. {has} {_and(long)}, in {color}. {cond}."
        if not is_new or rng.random() < 0.5:
            text += f" {note}"
        return text + f" {rng.choice(LOGISTICS)}"
    if style == 2:  # bullets
        bullet = rng.choice(["•", "-", "*"])
        lines = [f"{brand} {model} {title_noun}", ""] + [f"{bullet} {_bare(x)}" for x in long]
        lines.append(f"{bullet} Colour: {color}")
        lines.append(f"Condition: {cond}")
        return "\n".join(lines)
    if style == 3:  # shop copy
        is_are = "are" if pair else "is"
        text = f"The {brand} {model} {is_are} {_a(noun, pair)} with {long[0]} and {long[1]}. {blurb}"
        text += (
            f" {'They also have' if pair else 'It also has'} {_and(long[2:]) if len(long) > 3 else long[2]}."
        )
        text += f" Shown in {color}."
        return text if is_new else text + f" Condition: {cond.lower()}."
    if style == 4:  # terse
        parts = [brand, model, *short, noun, color] + ([] if is_new else [cond.lower()])
        return " ".join(parts).lower()
    if style == 5:  # spec sheet
        return (
            f"Brand: {brand}\nModel: {model}\nType: {noun}\nSpecs: {', '.join(short)}\n"
            f"Colour: {color}\nCondition: {cond}"
        )
    if style == 6:  # title then a paragraph
        text = f"{brand} {model} {title_noun} ({color})\n{blurb} Specs: {_and(long)}."
        return text if is_new else text + f" {cond}. {note}"
    if style == 7:  # "anyone after" classified
        text = f"Anyone after {_a(noun, pair)}? {brand} {model}, {' / '.join(short)}, {color}."
        return text + (f" {note}" if is_new else f" {cond}. {note}") + f" {rng.choice(LOGISTICS)}"
    if style == 8:  # pipes
        parts = [f"{brand} {model}", noun, *short, color] + (["New"] if is_new else [cond])
        return " | ".join(parts)
    if style == 9:  # condition first, one sentence
        text = f"{cond} {brand} {model} {noun}, {color}, with {_and(long)}."
        return text + (f" {blurb}" if rng.random() < 0.5 else f" {note}")
    # title with the headline feature, blank line, a short seller paragraph with the rest
    text = f"{brand} {model} {title_noun}, {short[0]}\n\n{blurb} {has} {_and(c['rest'])}. Colour is {color}."
    return text if is_new else text + f" {cond}. {note}"


def _price(rng: random.Random) -> tuple[str, float]:
    category = rng.choice(sorted(CATEGORIES))
    cat = CATEGORIES[category]
    tier = rng.choices(["budget", "mid", "premium"], weights=[3, 4, 2])[0]
    brands, tier_mult = BRANDS[tier]
    price = cat.base * tier_mult
    chosen = []
    for values in cat.attributes:
        mult, shorts, longs = rng.choice(values)
        chosen.append((rng.choice(shorts), rng.choice(longs)))
        price *= mult
    conditions = [k for k in sorted(CONDITIONS) if cat.renewable or k != "renewed"]
    condition = rng.choices(conditions, weights=[CONDITIONS[k][1] for k in conditions])[0]
    cond_mult, _, cond_words = CONDITIONS[condition]
    price *= cond_mult * rng.uniform(0.9, 1.1)  # the market is noisy; no model gets it exactly
    # Retail endings: .99 for most, .00 for premium brands, .49 now and then.
    dollars = max(5, round(price))
    cents = 0 if tier == "premium" else rng.choice([99, 99, 99, 49, 0])
    if cents:
        dollars -= 1
    rest = [lo for _, lo in chosen[1:]]  # the long forms of all but the headline feature
    long = [lo for _, lo in chosen]
    rng.shuffle(long)  # prose lists features in any order; titles and spec lines keep title order
    context = {
        "brand": rng.choice(brands),
        "model": _model(rng),
        "noun": rng.choice(cat.nouns),
        "pair": cat.pair,
        "short": [s for s, _ in chosen],
        "long": long,
        "rest": rest,
        "color": rng.choice(cat.colors),
        "cond": rng.choice(cond_words),
        "is_new": condition == "new",
        "note": rng.choice(SELLER_NOTES[condition]),
        "blurb": rng.choice(cat.blurbs),
    }
    return _listing(rng, context), dollars + cents / 100


def make_prices(rng: random.Random, count: int = 310) -> list[dict]:
    rows, seen = [], set()
    while len(rows) < count:
        text, price = _price(rng)
        if text in seen:
            continue
        seen.add(text)
        rows.append(_row(PRICE_SYSTEM, text, f"{price:.2f}"))
    return rows


# ---------------------------------------------------------------------------------------------
# extraction.jsonl: support email -> JSON
# ---------------------------------------------------------------------------------------------

EXTRACT_SYSTEM = (
    "You read customer support emails and extract a JSON object with exactly these keys: "
    '"name" (the customer\'s full name), "product" (the product they write about), '
    '"issue" (one of "billing", "login", "shipping", "defect", "refund", "setup"), '
    '"urgency" ("low", "medium" or "high") and "order_id" (the order number as written, or null). '
    "Reply with the JSON object only."
)

FIRST = [
    "Maria", "James", "Priya", "Chen", "Fatima", "Lukas", "Aisha", "Diego", "Hannah", "Kwame", "Sofia",
    "Tomasz", "Yuki", "Oliver", "Amara", "Mateo", "Ingrid", "Ravi", "Leila", "Samuel", "Nadia", "Jonas",
    "Grace", "Bilal", "Margit", "Eoin", "Rosa", "Dmitri", "Aoife", "Tunde",
]  # fmt: skip
LAST = [
    "Okafor", "Lindqvist", "Nair", "Wei", "Haddad", "Brenner", "Mensah", "Alvarez", "Kowalski", "Tanaka",
    "Rossi", "O'Brien", "Dubois", "Petrov", "Silva", "Andersen", "Kapoor", "Moreau", "Nguyen", "Fischer",
    "Byrne", "Adeyemi", "Castillo", "Halloran", "Szabo", "Whitfield", "Mbeki-Jones", "Varga",
]  # fmt: skip

# product -> what it is (a body written for "camera" only gets a product tagged "camera"; "home": a
# plugged-in appliance that sits in a room; "mount": fixed to a wall or door; "house": a smart-home
# device, as opposed to a wearable)
PRODUCTS: dict[str, set[str]] = {
    "Lumaro Smart Thermostat": {"smart", "house", "screen", "sensor", "mount"},
    "Corvane Robot Vacuum": {"smart", "house", "battery", "home"},
    "Altrena Air Purifier": {"smart", "house", "sensor", "home"},
    "Northby E-Bike 500": {"battery", "screen"},
    "Pellham Espresso Pro": {"kitchen", "home"},
    "Kovi Video Doorbell": {"smart", "house", "battery", "camera", "mount"},
    "Brisko Fitness Tracker": {"smart", "battery", "screen", "sensor"},
    "Helixa Mesh Router": {"smart", "house", "home", "mount"},
    "Zentro Baby Monitor": {"smart", "house", "screen", "camera", "mount"},
    "Aurion Soundbar": {"smart", "house", "home", "mount"},
    "Dunmore Smart Lock": {"smart", "house", "battery", "lock", "mount"},
    "Valuline Electric Kettle": {"kitchen", "home"},
    "Orvelle Wireless Headset": {"battery"},
    "Maison Verre Stand Mixer": {"kitchen", "home"},
    "Sterling & Hale Smartwatch": {"smart", "battery", "screen", "sensor"},
}

# issue -> [(urgency, the kind of product it fits or "" for any, the email's core)]. {product} is the
# product's full name; {products} its plural; {order} an order number, where the email gives one inline.
# fmt: off
EMAILS: dict[str, list[tuple[str, str, str]]] = {
    "billing": [
        ("medium", "", "I was charged twice for the {product} I bought last week: two identical payments on my card statement, same day, a minute apart. Could you refund one of them?"),
        ("high", "smart", "There's a monthly charge for a '{product} Plus' subscription on my card that I never signed up for. This is the third month. I need it stopped today and the money returned, I'm on a tight budget and this has put me overdrawn."),
        ("low", "", "Not urgent at all, but the invoice for my {product} shows my old address. Whenever you get a chance could you reissue it with the new one? It's just for my records."),
        ("medium", "", "I used the discount code WELCOME15 when I ordered the {product} but the full price was taken. The code showed as accepted at checkout. Can you look into it?"),
        ("high", "", "You've charged me for the {product} three times. THREE. My bank has frozen the card for suspected fraud and I can't pay for anything. Sort this out immediately and tell me what happened."),
        ("medium", "smart", "My {product} subscription renewed at a higher price than last year and I didn't get any notice about it. Can you explain the increase, or put me back on the old rate?"),
        ("low", "", "Could you send me a VAT invoice for order {order}? It's for the {product}. Our accountant needs it for the quarterly return, which isn't due until next month, so no hurry."),
        ("medium", "", "My payment for the {product} failed and now the order just says 'payment pending'. My card works fine everywhere else. Do I need to pay again or will it retry by itself?"),
        ("high", "smart", "Our business account was billed for 12 {product} licences instead of 2. That's a big difference for a company our size, and finance are asking me about it this afternoon. I need a corrected invoice today."),
        ("low", "smart", "Small question about billing. The receipt for my {product} plan says 'annual' but I'm fairly sure I picked monthly. Not a big deal either way, I'd just like to understand what I'm paying for."),
        ("medium", "", "I paid for the {product} with a gift card plus my credit card, but the gift card balance wasn't used and the whole amount went on the card. Can you correct this?"),
        ("high", "", "Someone has used my card to buy a {product} from your website. I did NOT place order {order}. Please cancel it before it ships and reverse the charge, I've already reported it to my bank."),
        ("medium", "smart", "I downgraded my {product} plan at the start of the month but I've still been charged the old price. Please adjust it."),
        ("low", "", "Just noticed I paid shipping on the {product} even though the site said free shipping over 50. It was only 4.99 so I'm not fussed, but thought I'd mention it in case it's catching other people too."),
        ("high", "smart", "I cancelled my {product} subscription in January, I have the confirmation email, and you've charged me every month since. I want this fixed today, otherwise I'm going to my bank."),
        ("medium", "", "Can you tell me why there's an extra 12.80 'handling fee' on my {product} order? It wasnt shown anywhere before i paid."),
        ("low", "smart", "At some point before it renews in June I'd like to switch the card used for my {product} subscription. What's the easiest way to do that?"),
        ("medium", "", "My company needs the invoice for the {product} made out to the business, not to me personally. The order number is {order}. Could you reissue it?"),
        ("high", "", "I've been charged in pounds instead of euros for the {product} and my bank hit me with fees. I need a corrected invoice by Friday for my expense claim or I'll be out of pocket."),
        ("medium", "smart", "I got an email saying my {product} payment failed and the service will be suspended in 3 days, but the money has definitely left my account. Please check."),
        ("low", "", "Tiny thing: my invoice for the {product} lists quantity 2, but I only bought one and was only charged for one. Just flagging it so your records are right."),
        ("medium", "smart", "The {product} app says my free trial runs until the 30th but I've already been charged for the first month. Was that a mistake?"),
        ("high", "", "Your system took the payment for my {product} twice and now my rent payment has bounced. I need one of those payments reversed today please."),
        ("medium", "", "Could you split the invoice for order {order}? Half should go to my department and half to the team we share the {product} with."),
        ("low", "smart", "I was wondering whether the {product} subscription can be billed yearly instead of monthly. If it saves a bit I'd switch, but there's no hurry."),
        ("medium", "", "I paid for express delivery on the {product} but the receipt says standard, while the charge on my card is the express price. Which is it?"),
        ("high", "smart", "All four of our {product} accounts were charged on the same day and the total is four times what our contract says. We're a small charity and this matters. Please call me as soon as you can."),
        ("medium", "", "The amount on my statement for the {product} is 10 more than the order confirmation said. Can you explain the difference?"),
        ("low", "", "I can't find the receipt for my {product} in my emails. Could you resend it when you have a moment?"),
        ("medium", "smart", "I'm billed for the premium tier on my {product} but the app still shows the basic features. Either give me what I'm paying for or charge me the basic price."),
        ("high", "", "You charged me again for the {product} yesterday, even though I returned it weeks ago and you confirmed receiving it! That's 899 out of my account. I need it reversed right away."),
        ("medium", "", "Is there a reason my card was charged before the {product} was even dispatched? I thought you only took payment when it ships."),
        ("low", "smart", "My {product} renewal email said 59 but the charge was 59.99. Not worth arguing about, I'm just curious where the 99 cents comes from."),
        ("medium", "", "I had two promo codes, one from the newsletter and one from the box insert, but only one was applied to my {product} order {order}. Should both have worked?"),
        ("high", "house", "The {product} service for our office was cut off this morning for 'non-payment', but we paid the invoice on time and I have the bank confirmation. Everything is down. Please restore it now."),
        ("medium", "", "Could you confirm whether my payment for the {product} went through? I got an error screen, then a confirmation email, and my bank shows a pending charge."),
        ("low", "", "For my records, could you break down the tax on my {product} invoice? It looks a bit higher than I expected. Whenever is fine."),
        ("medium", "smart", "We added one user to our {product} workspace and got charged for five. Please correct the invoice and the next billing cycle."),
        ("medium", "", "The instalment plan I chose for the {product} was meant to be 4 payments of 75, but you've taken 150 this month. Can you check it?"),
        ("low", "smart", "Could you update the billing address on my {product} account? It's only used on the invoices, so no rush."),
        ("medium", "", "My employer reimburses equipment, but they need an itemised invoice for the {product}, not just the order confirmation. How do I get one?"),
        ("high", "", "I've been double charged for order {order} ({product}) and the extra payment has pushed me into my overdraft. Please reverse the duplicate as a matter of urgency."),
        ("medium", "smart", "Why is my {product} subscription charged on the 3rd when I signed up on the 20th? Can the date be moved to match my payday?"),
        ("low", "", "My {product} order confirmation shows a slightly different total from the invoice, by about 2. No urgency, I'd just like to know which one is right."),
    ],
    "login": [
        ("high", "house", "I can't log into the {product} app. It says 'invalid credentials' even though I reset my password twice this morning. I'm travelling tomorrow and need to be able to check on the house, so please help today."),
        ("medium", "smart", "The two-factor codes for my {product} account aren't arriving by text any more. I changed phone carrier last month but kept the number. How can I get back in?"),
        ("low", "smart", "Not urgent, but every time I open the {product} app it asks me to sign in again. It would be nice if it remembered me."),
        ("high", "smart", "Someone has changed the password on my {product} account and I'm locked out. The recovery email has been changed too, so this isn't me forgetting. That account has my address and card details on it, please treat this as an emergency."),
        ("medium", "smart", "I set up the {product} with my work email and I've since left that job, so I can't receive the reset link. Can you move the account to my personal address?"),
        ("medium", "smart", "Since the last update the {product} app logs me out every few minutes and I have to type everything in again. Is there a fix?"),
        ("low", "smart", "Quick one, whenever you have a minute: how do I turn on two-factor authentication for my {product} account? I couldn't find it in settings."),
        ("high", "house", "I'm locked out of my {product} account after too many attempts and the message says 24 hours. I run a small B&B and guests arrive tonight, I need access before then."),
        ("medium", "smart", "The password reset email for my {product} account never arrives. I've checked spam and tried twice."),
        ("medium", "smart", "My husband and I share the {product}. He changed the password, now neither of us remembers it, and the reset goes to an old email address he can't get into. What can we do?"),
        ("low", "smart", "The {product} app keeps asking me to verify my email address even though I did that when I signed up. It's not stopping me using it, it's just annoying."),
        ("high", "smart", "I got an alert that someone signed into my {product} account from another country. It wasn't me. I've changed my password but I want every other session logged out immediately."),
        ("medium", "smart", "I'm trying to log into the {product} web portal and it just loops back to the sign-in page. Different browsers, same thing."),
        ("low", "smart", "Is there a way to use a fingerprint for the {product} app instead of typing my password? Just curious, no rush."),
        ("medium", "smart", "New phone, and the authenticator codes for my {product} account didn't transfer. My backup codes are somewhere in a drawer but I can't find them. How do I get back in?"),
        ("high", "house", "Our whole office has been locked out of the {product} admin account since this morning. The admin who set it up is on holiday and unreachable. We need access today to manage the devices."),
        ("medium", "smart", "The {product} app says 'account not found' when I sign in, but I've been using it for a year and I still get your emails at the same address."),
        ("low", "smart", "I'd like to change the email I use to log into the {product} app but don't see an option for it in my profile. No hurry."),
        ("medium", "smart", "When I enter the verification code for my {product} account it always says 'code expired', even if I type it in straight away."),
        ("high", "smart", "My mother can't get into her {product} account and she relies on it. She's been without it since Saturday and the reset link goes to an email she can't access. Please help us today."),
        ("medium", "smart", "I accidentally made two accounts for my {product}, one with my email and one with my phone number. The device is on the one I can't log into. Help please."),
        ("low", "smart", "My {product} account still has my maiden name as the username. Could it be changed at some point? Not important."),
        ("medium", "smart", "I can log in on the website, but the {product} app rejects exactly the same password. I copy-pasted it to be sure."),
        ("high", "house", "I'm locked out of my {product} account and it's set up in a rental flat where my tenants live. I can't help them with anything until I'm back in. Please prioritise this."),
        ("medium", "smart", "Since the update I can't sign in to the {product} app with my phone number, it only offers email, which I never set up."),
        ("low", "smart", "Could you tell me which email address is linked to my {product} account? I think I registered with an old one. Nothing's broken, I just want to tidy up."),
        ("medium", "smart", "The {product} login is asking me a security question about my first car, but I never set a security question. Is this some kind of phishing?"),
        ("high", "smart", "My ex still has the login to our {product} account and has been changing settings. I need the password reset and them locked out today. I'm the one who bought it, order {order}."),
        ("medium", "smart", "The {product} app says my account is 'disabled'. I haven't done anything unusual. Can you tell me why and switch it back on?"),
        ("low", "smart", "My daughter made a login for me on the {product} app and I'd like my own instead. When you have time, could you explain how?"),
        ("medium", "smart", "I'm the owner of our {product} account but I can't invite my partner. It says 'insufficient permissions'."),
        ("high", "smart", "The 2FA code for my {product} account goes to my old number, and that phone was stolen last night. The police want me to check my account activity this morning. Please get me in."),
        ("medium", "smart", "The password reset link for the {product} says 'token invalid' every time I click it. Tried three times in the last hour."),
        ("low", "smart", "The {product} app signs me out whenever my phone switches between wifi and mobile data. I just log back in, but thought you'd want to know."),
        ("medium", "smart", "I get 'too many requests' when I try to log in to my {product} account, and ive only tried twice??"),
        ("high", "smart", "Please lock my {product} account immediately. My phone was stolen an hour ago and the app is logged in on it."),
        ("medium", "smart", "I'm trying to log in to the {product} app on a new tablet but the confirmation goes to an address I closed years ago. How do I prove it's my account?"),
        ("low", "smart", "Can the {product} app keep me signed in for longer? It logs me out every week or so. Not really a problem."),
        ("medium", "smart", "Single sign-on to the {product} dashboard through our company directory stopped working for me. My colleagues can still get in, I can't."),
        ("high", "house", "I can't get into my {product} account and I'm away from home for two weeks from tomorrow morning. I need to be able to check on the house. The reset emails just aren't coming."),
        ("medium", "smart", "My username for the {product} app has a typo in it from when I signed up and I can't remember which typo. Could you find my account? The order number was {order}."),
        ("low", "house", "Is it possible to give my cleaner a separate login to the {product} app with limited access? Would be handy at some point."),
        ("medium", "smart", "Logged in fine yesterday. Today the {product} app says my password has expired and I need a new one, but it never accepts the new one."),
        ("high", "smart", "Our {product} admin account has been taken over. Someone changed the password and removed me as owner. I own the business and I need control back today."),
        ("medium", "smart", "The code generator app I use for my {product} login was wiped when my phone updated. Is there another way to prove it's me?"),
    ],
    "defect": [
        ("high", "home", "My {product} started smoking and smelling of burning plastic this morning. I've unplugged it and put it outside. I'm not plugging it back in. I need to know what to do and whether it's safe."),
        ("medium", "", "The {product} I bought three weeks ago won't turn on any more. No lights, nothing. I've tried a different socket and a different cable."),
        ("low", "home", "The {product} works fine but there's a faint rattle when it's running. Not a big deal for now, I'm just wondering if that's normal."),
        ("medium", "screen", "The screen on my {product} has a line of dead pixels down the left side. It appeared after a week of use, no drops or knocks."),
        ("high", "", "My {product} stopped working the day before I leave for a month abroad and I use it every day. Can you replace it before Thursday? Order {order}."),
        ("medium", "", "The power button on the {product} is stuck and doesn't click any more, so I can't switch it off properly. It just sits there with the light on."),
        ("low", "", "The finish on my {product} is starting to bubble near the bottom. It still works perfectly. Not urgent, but is this covered?"),
        ("medium", "", "The {product} keeps switching itself off after about ten minutes. It doesn't seem to be overheating, it just dies. Very anoying."),
        ("high", "kitchen", "The {product} gave me an electric shock when I touched the metal edge. I've stopped using it. This needs looking at straight away, I have kids in the house."),
        ("medium", "battery", "The battery on my {product} used to last a week and now it's down to a day. It's only four months old."),
        ("low", "", "There's a small crack in the casing of my {product}. I think it's been there since it arrived, I only just noticed. It works fine."),
        ("medium", "home", "My {product} makes a high-pitched whine all the time, even on standby. It's driving us mad at night."),
        ("high", "kitchen", "The {product} is leaking water from the base all over the counter and it nearly reached the socket this morning. I've stopped using it. I need a replacement urgently, it's not safe."),
        ("medium", "battery", "The charging port on my {product} is loose. I have to hold the cable at an angle to get it to charge at all."),
        ("low", "screen", "The display on the {product} is a bit dimmer on one side than the other. Only noticeable in a dark room. Just wanted to report it."),
        ("medium", "home", "Two months in and the {product} has started making a grinding noise every time I use it. It sounds like something has come loose inside."),
        ("high", "camera", "Our {product} died overnight and we use it to keep an eye on my father, who has dementia. Please send a replacement as fast as you possibly can."),
        ("medium", "smart", "The {product} was fine at first, but after the first week it started resetting itself at random. Sometimes twice an hour."),
        ("low", "home", "Not urgent: the rubber feet on the {product} have come off. Could you send replacements? Happy to wait."),
        ("medium", "kitchen", "The lid on the {product} doesn't lock into place any more, so it won't start. The clip seems to have snapped."),
        ("high", "battery", "The battery in my {product} has swollen and the case has split open. I've put it outside on the patio. I'm worried it could catch fire. What should I do?"),
        ("medium", "smart", "The {product} keeps disconnecting and reconnecting, the light flashes every few seconds. Everything else on the same network is fine."),
        ("low", "home", "The {product} has developed a slight wobble. It still works, I'd just like to know if there's a part I can tighten."),
        ("medium", "screen", "The touchscreen on my {product} doesn't respond in the top corner any more, so I can't reach the settings button."),
        ("high", "", "My {product} stopped dead in the middle of a job and won't respond at all. I use it for work every day and I'm losing money without it. Please arrange a swap today. Ref {order}."),
        ("medium", "camera", "The night vision on the {product} has stopped working. It's fine during the day, but at night the picture is just black."),
        ("low", "kitchen", "The {product} is a fair bit louder than my old one. Probably not broken, but is there something I can check?"),
        ("medium", "battery", "My {product} won't charge past 30% since the weekend. It was fine before that."),
        ("high", "kitchen", "Sparks came out of the back of the {product} when I switched it on and it tripped the electrics in the whole flat. I won't be using it again. I need someone to call me today."),
        ("medium", "", "The {product} powers on but nothing happens after that. The light goes green, then off, over and over."),
        ("low", "", "Minor thing: one of the indicator lights on the {product} doesn't light up any more. Everything else is normal."),
        ("medium", "sensor", "The {product} reports completely wrong readings. It says 30 degrees in a room that's clearly about 19."),
        ("high", "camera", "The {product} stopped recording two days ago and someone broke into our shed last night. There's nothing on it. I need it fixed and to know whether any footage can be recovered. Order number {order}."),
        ("medium", "", "Brand new {product} and it already has a fault: it turns on, runs for a minute, beeps three times and stops."),
        ("low", "battery", "My {product} charges a bit more slowly than it used to. It still gets there overnight so there's no rush, but is the battery on its way out?"),
        ("high", "kitchen", "Bits of black plastic keep coming off inside the {product}. I found some in my drink this morning. I've stopped using it until I hear from you, please reply quickly."),
        ("medium", "home", "The {product} overheats after ten minutes and shuts down. It's on a hard, flat surface with plenty of space around it."),
        ("low", "home", "There's a faint plastic smell from the {product} when it's on. Probably just new-appliance smell and I'm not worried, but how long does it usually last?"),
        ("medium", "screen", "The screen on the {product} has been flickering constantly since last week. It's hard to read anything."),
        ("high", "lock", "The {product} has stopped working completely and it's the only way into the house. We're locked out right now with two kids in the car."),
        ("medium", "", "The {product} has a bent pin in the connector. It sort of works if I push it in hard, but I don't want to break it."),
        ("low", "", "Just so you know, the {product} had a tiny dent on top when I unboxed it. It works fine so I'm keeping it."),
        ("medium", "battery", "My {product} turns itself off at random even with a full battery. It happened four times today."),
        ("high", "", "This is the second {product} in a row that has failed within a week. I'm not going through this again. I want a working unit shipped today."),
        ("medium", "", "The {product} started making a clicking sound and then stopped working altogether. I'm just past the 30-day return period, so I'm hoping the warranty covers it."),
    ],
    "shipping": [
        ("medium", "", "My {product} was supposed to arrive last Tuesday and the tracking hasn't updated in six days. Could you check with the courier? Order {order}."),
        ("high", "", "The tracking says my {product} was delivered yesterday at 3pm, but nothing came and I was home all afternoon. It's a birthday present for tomorrow, so I really need this sorted today."),
        ("low", "", "My {product} order hasn't shipped yet but there's no rush at all, I'm away until the end of the month anyway. Just checking it's still on its way at some point."),
        ("medium", "", "I got the wrong colour. I ordered the {product} in white and a black one came. Can you swap it?"),
        ("high", "", "I need to change the delivery address for my {product} urgently. It's going to my old flat, I've moved out and the new tenant won't forward anything. Can you stop it today?"),
        ("medium", "", "The box with my {product} arrived badly crushed and the item inside has a dent. I've taken photos. How would you like me to proceed?"),
        ("low", "", "Could you tell me which courier will deliver my {product}? I'd like to arrange for a neighbour to take it in. Nothing urgent."),
        ("medium", "", "I ordered two {products} and only one arrived, though the packing slip says two. Order reference {order}."),
        ("high", "", "Where is my {product}? It's been three weeks, I've emailed twice and nobody replies. I want an answer today."),
        ("medium", "", "The courier left my {product} on the doorstep in the rain and the box was soaked through. The item seems ok, but what happens if it turns out not to be?"),
        ("low", "", "Just curious whether my {product} order {order} ships in one box or several. No urgency."),
        ("medium", "", "The tracking number for my {product} doesn't work on the courier's website. It just says 'not found'."),
        ("high", "", "My {product} is stuck at customs and they say they need a document from you, or it goes back on Friday. Please send it as soon as possible."),
        ("medium", "", "The {product} was delivered to a house four doors down according to the photo, but they say they don't have it."),
        ("low", "", "The delivery estimate for my {product} says 10-14 days. Is that right for standard shipping? Fine if so, I just wasn't expecting it."),
        ("medium", "", "Got a box today but instead of the {product} there was a phone case in it, no idea whose. What should I do with it, and where's mine?"),
        ("high", "", "I paid for next-day delivery on my {product} because I need it for an event tomorrow, and the tracking says it hasn't even left your warehouse. Please get it moving."),
        ("medium", "", "My {product} order shows 'returned to sender'. I never had a delivery attempt or a card through the door. Can you resend it? Order {order}."),
        ("low", "", "Is there any way to combine my two orders so the {product} and the accessories come together? If not, no worries."),
        ("medium", "", "The {product} arrived but the power adapter was missing from the box. Everything else is there."),
        ("high", "", "The courier's app says my {product} was 'damaged in transit' and is being returned. I need it for our new office opening on Monday. Can you send another today by express?"),
        ("medium", "", "I put the wrong flat number on my order for the {product}. The courier couldnt find me and now its at the depot. Can you fix the adress?"),
        ("low", "", "My {product} came a day late, which is fine, but the box was left at the back door without any message. A text next time would be nice."),
        ("medium", "", "My {product} has been 'out for delivery' for three days now. is it actually comming?"),
        ("high", "", "Order {order}, {product}. This is the third time the courier has marked it 'failed attempt' while I've been sitting at home. I'm furious and I need it delivered tomorrow."),
        ("medium", "", "Do you deliver to PO boxes? The courier rejected my {product} order because of the address. We live rurally and it's all we have."),
        ("low", "", "Could you let me know roughly when the {product} I pre-ordered is expected to ship? Happy to wait, just planning ahead."),
        ("medium", "", "The outer box was fine but the {product}'s own box had been opened, and the manual and cable are missing."),
        ("high", "", "My {product} tracking shows it went to a different city entirely. It's a gift for my mum's 80th on Saturday. Please tell me you can get it here in time."),
        ("medium", "", "The courier wants a signature, but I work nights and sleep during the day. Can my {product} be left in a safe place instead?"),
        ("low", "", "Could you add 'leave with concierge' to the delivery notes for my {product}? Whenever you can."),
        ("medium", "", "My {product} order shows as split into two shipments but I've only got one tracking number."),
        ("high", "", "I've been waiting two weeks for my {product} and the tracking still says 'label created'. I'm starting to think it was never sent. I need either a real update or a replacement shipped today."),
        ("medium", "", "The {product} came today but it's the older model, not the one on my order confirmation."),
        ("low", "", "Can you hold my {product} at the depot so I can collect it next week? I'm in no hurry."),
        ("medium", "", "Delivery of my {product} was booked for today between 8 and 12. It's now 6pm, no sign of it and no message either."),
        ("high", "", "My {product} was delivered to the wrong house and the people there won't give it back. I need you to deal with the courier today."),
        ("medium", "", "Could you check why my {product} order {order} hasn't shipped? The page said 'ships in 24 hours' and it's been five days."),
        ("low", "", "My {product} came by express even though I paid for standard. Not complaining! Just letting you know in case it's a mistake on your end."),
        ("medium", "", "The parcel with my {product} came open at one end and some of the packing was missing. The unit looks fine, but I'd like it on record in case something shows up later."),
        ("high", "", "I need my {product} by Thursday for a client installation and the courier has just emailed to say it's delayed by a week. Is there anything you can do? Order {order}."),
        ("medium", "", "I had the {product} sent to my work address, but our office is closed this week for renovations. Can the delivery be pushed back?"),
        ("low", "", "The courier left my {product} with a neighbour, which is fine, I've got it! Maybe mention to them that a note would have helped."),
        ("medium", "", "My three {products} came in three separate boxes on three different days, and one box still hasn't turned up. Can you check?"),
        ("high", "", "My {product} order {order} hasn't arrived and I'm moving abroad on Sunday. If it doesn't come by Friday I won't be here to receive it. Please escalate."),
    ],
    "refund": [
        ("medium", "", "I returned the {product} two weeks ago. Your warehouse signed for it on the 4th but I still haven't had my refund. Can you check?"),
        ("low", "", "I'd like to return the {product}. It works fine, it's just bigger than I expected. How do I get a refund? No rush."),
        ("high", "", "I was promised a refund for the faulty {product} a month ago and I'm still waiting. I've been patient, but I need the money back this week, I can't afford to wait any longer."),
        ("medium", "", "The refund I got for my {product} is 30 less than I paid. Was a restocking fee taken off? Nobody mentioned one."),
        ("medium", "", "Please cancel my {product} order {order} and refund me. I've found out it doesn't work with what I already have at home."),
        ("low", "", "I've changed my mind about the {product}, it's still sealed. Could you send me a returns label when you get a chance?"),
        ("high", "", "My {product} order was cancelled because you ran out of stock, but the 420 you took hasn't come back. That was my grocery money for the week. I need it back now."),
        ("medium", "", "You agreed to a partial refund because my {product} arrived scratched. It's been ten days and I haven't seen it."),
        ("medium", "", "I'm within the 30-day window and I'd like to return the {product} for a full refund. It doesn't do what the website said it would."),
        ("high", "", "I returned my {product} six weeks ago with tracking, your team confirmed they received it, and three different people have told me 'it's processing'. Issue my refund today or I'll take this further."),
        ("low", "", "No hurry on this, but could you refund the shipping I paid on the {product}? Your colleague Femi said it would be refunded because it arrived late."),
        ("medium", "", "Can my refund for the {product} go to a different card? The one I paid with has expired and been cancelled."),
        ("low", "", "I returned a {product} last month and got the refund, thank you, but the accessory I sent back with it wasn't included. Whenever you get to it."),
        ("medium", "", "The price of the {product} dropped by 40 the day after I bought it, and your website says you offer 14-day price protection. Can I have the difference refunded? Order {order}."),
        ("high", "", "I've been waiting over a month for the refund on my returned {product}. That's money I need for rent. Please process it immediately and send me proof."),
        ("medium", "smart", "I'd like a refund for the {product} subscription that renewed by accident yesterday. I haven't used anything since the renewal."),
        ("low", "", "Just checking on my refund for the {product}. I know these things take time and I'm not worried, I just want to make sure it's in the system."),
        ("medium", "", "The {product} I returned was a gift, so I don't have the order details. Can the refund be store credit for me instead?"),
        ("high", "", "Your website says refunds take 5 days. It's been 25. Unless I hear back today I'm opening a chargeback with my bank for the {product}."),
        ("medium", "", "I want to return the {product} but the returns page says 'not eligible'. It was delivered nine days ago and I haven't used it."),
        ("low", "", "I'd like to send back one of the two {products} I bought, I only need one after all. What's the best way to do that?"),
        ("medium", "", "I was told I'd get a refund once the courier confirmed my {product} was lost, and they've now confirmed it. When will the money come through?"),
        ("high", "", "The refund for order {order} ({product}) still hasn't arrived, three weeks after you confirmed it. My bank says there's no incoming payment. I need the transaction reference today."),
        ("medium", "", "Can I still return the {product} for a refund even though I threw the box away? It's in perfect condition otherwise."),
        ("low", "", "I'd like to return the {product} as it's not really for me. There's no time pressure, it's sitting in the cupboard. What do I need to do?"),
        ("medium", "", "I recieved a refund for the {product} but for the wrong amount. You refunded the shipping but not the item itself."),
        ("high", "", "The {product} turned out to be the wrong model for what I need, so I sent it back the next day. Two weeks later there's still no refund and I've had to buy the right one elsewhere. I need that money back this week."),
        ("medium", "", "Could I have a refund instead of a replacement for my {product}? I've lost confidence in it after the first one failed."),
        ("low", "smart", "I cancelled the {product} add-on after the trial but the first month still went through. I think I'm due a refund, but it's only a few pounds, so take your time."),
        ("medium", "", "I dropped the {product} off at a return point last Monday and the tracking shows it reached you. How long untill I see the refund?"),
        ("high", "", "My refund for the {product} went to a card that was closed because of fraud, and the bank says they'll bounce it. It's 600. Please send it another way, urgently."),
        ("medium", "", "Please confirm the refund amount for my returned {product}. The email said full refund but my bank shows less."),
        ("low", "", "I'd like to return the {product} under the 60-day trial. I'm using it until the replacement I ordered elsewhere arrives, so there's no rush on collecting it."),
        ("medium", "", "I've had a message saying my returned {product} failed inspection and won't be refunded. It was in perfect condition when it left me. Can you explain?"),
        ("high", "", "I returned the {product} a month ago and instead of refunding me you've sent it back to me! I don't want it, I want my money. Please deal with this today."),
        ("medium", "", "My {product} went back under warranty and you said I'd be refunded because it can't be repaired. Still waiting. Ref {order}."),
        ("low", "", "Could you refund the gift wrap I paid for on the {product}? It came without it. Honestly not a big deal."),
        ("medium", "", "The {product} is missing features that were in the product description, so I'd like to return it for a refund."),
        ("high", "", "I need to cancel order {order} for the {product} right now, I ordered it twice by mistake, and get the money back before my card bill is due on Friday."),
        ("medium", "", "I returned the {product} and got an email saying 'refund issued', but the amount on it is zero. What happened?"),
        ("low", "", "I was told I'd get a goodwill refund for the late {product} delivery. Whenever it's convenient, could you let me know when to expect it?"),
        ("medium", "", "I'd like to return the {product} my sister ordered for me. She has the order number, I don't. Can the refund go to her card?"),
        ("high", "", "The {product} you sold me was listed as new but it's clearly used: scratches, someone else's settings on it. I want a full refund and a prepaid return label today."),
        ("medium", "smart", "I paid for a year of the {product} premium plan and you've since removed the feature I bought it for. I'd like a pro-rata refund."),
        ("low", "", "The {product} arrived after I'd already bought one in a shop, so I'd like to send yours back for a refund. It's unopened. No urgency."),
    ],
    "setup": [
        ("medium", "smart", "I can't get my {product} to connect to our Wi-Fi during setup. It finds the network and then fails at the last step with 'connection timed out'."),
        ("low", "smart", "How do I pair the {product} with a second phone? My partner wants to use it too. No rush."),
        ("high", "smart", "I'm trying to set up the {product} for my elderly neighbour before I go away tomorrow morning, and it won't get past the 'registering device' step. I've been at it for two hours. Please help today."),
        ("medium", "smart", "The {product} setup asks for a code that should be on the device, but there's no sticker anywhere. Where do I find it?"),
        ("medium", "", "The instructions in the box for the {product} don't match what I'm seeing. Step 4 mentions a button that isn't there."),
        ("low", "house", "I'd like to move my {product} to a different room and a different Wi-Fi network. What's the right way to do that without losing my settings?"),
        ("high", "smart", "We open our shop on Saturday and the {product} still isn't set up. The app says 'device not supported in your region'. I need this working before the weekend."),
        ("medium", "smart", "Do I need a hub to set up the {product}, or does it work on its own? The quick-start guide isn't clear."),
        ("low", "mount", "Setting up the {product}: which way round does the mounting bracket go? The diagram is a bit vague. It's not urgent, it's sitting on a shelf for now."),
        ("medium", "smart", "The {product} app wants location services switched on to finish setup. Why does it need that, and is there a way around it?"),
        ("medium", "smart", "Setting up my {product} fails with error S-11 every time. I've reset it four times."),
        ("high", "smart", "I need the {product} working before my mother comes home from hospital tomorrow. I've tried setting it up all evening and it keeps failing at the pairing step. Can someone call me first thing?"),
        ("low", "smart", "Is it possible to set up the {product} without creating an account? Just wondering, I prefer not to sign up for things."),
        ("medium", "home", "I've put the {product} together but I'm not sure the front panel is on right, it doesn't sit flush. Is there a video?"),
        ("medium", "smart", "Our router has separate 2.4 and 5 GHz networks and the {product} won't see either of them during setup."),
        ("low", "", "Could you send me the manual for the {product} as a PDF? I've lost the paper one. Whenever you get a chance."),
        ("high", "house", "I'm an installer with a {product} half set up at a client's house. It's been stuck on 'updating firmware' at 0% for 40 minutes. I need to finish this job today."),
        ("medium", "house", "How do I link the {product} to my voice assistant? The assistant can't find it."),
        ("low", "smart", "The {product} is set up and working, but I'd like to rename it from 'Device 1'. Where is that option?"),
        ("medium", "smart", "The QR code on the back of the {product} won't scan in the app. Is there a way to enter it by hand?"),
        ("medium", "", "I have no idea where to start with the {product}. The box has a quick-start card with three pictures and no words. Is there a proper guide somewhere?"),
        ("high", "house", "We have 20 {products} to set up across the office by Monday and the bulk setup option in the admin panel isn't working. Can someone walk us through it urgently?"),
        ("low", "battery", "I'm setting up my {product} this weekend. Should I charge it fully first? Just want to get it right."),
        ("medium", "smart", "The app keeps saying 'Bluetooth permission required' during {product} setup, but I've already allowed it."),
        ("medium", "smart", "During setup the {product} asks for a hub ID, and I don't have a hub. Did I buy the wrong thing?"),
        ("low", "smart", "Can I set up the {product} on my tablet instead of my phone? I don't really use my phone for this sort of thing."),
        ("high", "smart", "Setting up my {product} failed halfway and now it won't reset: the button does nothing and the light is solid red. I need it working tonight, we're leaving the house empty for two weeks."),
        ("medium", "", "The {product} came with a plug for a different country. Is there a proper adapter, or is it safe to use a travel one?"),
        ("low", "house", "What's the best spot for the {product} to get a good signal? I'm planning where everything goes before I set it up."),
        ("medium", "smart", "I set the {product} up on my phone but my wife can't see it on hers, even though I shared access. Is there another step?"),
        ("medium", "smart", "The {product} setup wizard crashes when I get to the 'choose your room' screen. Same thing on two different phones."),
        ("high", "smart", "I'm setting up the {product} for a resident in our care home and the staff need it running by tonight. The app won't accept the Wi-Fi password, and it's definitely right."),
        ("low", "", "Just got my {product}. Before I start, do I need to install anything on my computer, or is it all done on the device? No urgency."),
        ("medium", "smart", "How do I connect the {product} to a Wi-Fi network with a login page, like the one in our building? It gives me nowhere to enter the details."),
        ("medium", "sensor", "I'm trying to calibrate the {product} as the guide says, but there's no calibration option in the menu."),
        ("low", "house", "I set up the {product} with the default settings. Could you suggest good settings for a small flat? Only when you have time."),
        ("high", "lock", "I've just moved in and the {product} is how my carer gets into the flat. It won't link to the app at all. I need someone to help me set it up today."),
        ("medium", "smart", "Can the {product} be set up alongside the older model I already have? The app only shows one at a time."),
        ("low", "", "Which cable do i use for the {product}? theres two in the box and the guide dosen't say. not urgent"),
        ("medium", "smart", "{product} setup needs a 6-digit PIN, and the one on the sticker comes back 'invalid'. I've typed it in carefully three times."),
        ("high", "house", "I'm setting up the {product} as part of our office security before an insurance inspection at 9am tomorrow, and it won't come online. Please call me."),
        ("medium", "home", "The {product} won't turn on for the first time. Is there a switch I've missed? It's plugged in and nothing happens."),
        ("low", "house", "Can I set up schedules for the {product} from the website, or only in the app? Nothing's wrong, just planning things."),
        ("medium", "smart", "The app tells me to 'press and hold the setup button' on the {product}, but I can't find one. Which button is it?"),
        ("medium", "house", "We changed internet provider and the {product} has to be set up again on the new network. The old network's gone, so I can't follow the normal steps."),
    ],
}
# fmt: on

GREETINGS = [
    "Hi,", "Hello,", "Hi there,", "Dear Support,", "Dear support team,", "Good morning,", "Good afternoon,",
    "To whom it may concern,", "Hey,", "Hello team,", "Morning,", "Hiya,", "", "", "",
]  # fmt: skip
SIGNOFFS = [
    "Thanks,", "Thank you,", "Best regards,", "Kind regards,", "Cheers,", "Many thanks,", "Regards,", "Best,",
    "Thanks in advance,", "Speak soon,", "All the best,",
]  # fmt: skip
# Hand-written asides some customers add before or after the point (none says how urgent it is).
RAMBLE_BEFORE = [
    "I hope you're well. I've been a customer for a few years and never had to write in before, so apologies if this is the wrong address.",
    "Sorry to bother you on a weekend.",
    "I tried the chat on your website first but it kept going round in circles, so I'm emailing instead.",
    "Not sure this is the right place for this, but here goes.",
    "My son usually deals with this kind of thing but he's away, so here goes.",
    "I've read the help pages twice and I'm still none the wiser.",
    "First of all, thanks for the quick reply last time.",
]
RAMBLE_AFTER = [
    "I've attached a couple of photos in case they help.",
    "I'm usually reachable in the evenings if a call is easier.",
    "Thanks for your help with this.",
    "Otherwise very happy with everything I've bought from you.",
    "Let me know if you need anything else from me.",
    "I'll keep an eye on my inbox.",
]
INTROS = [
    "My name is {name}.",
    "This is {name}.",
    "{name} here.",
    "I'm {name}, a customer of yours.",
    "My name's {name}.",
]
SUBJECTS = [
    "Help please", "Question", "Problem with my {short}", "{short}", "Support request", "My order",
    "Re: your email", "Following up", "{short} issue", "Need some help",
]  # fmt: skip
ORDER_LINES = [
    "My order number is {order}.",
    "Order no. {order}",
    "(Order {order})",
    "The order reference is {order}, if that helps.",
    "Order number: {order}",
    "It was order {order}.",
]
TAILS = [
    "Sent from my phone",
    "Tel: 0161 496 {phone}",
    "Flat {flat}, {street}",
    "{street}",
    "{name_lower}@example.com",
]
STREETS = ["12 Marsh Lane", "4 Quarry Road", "88 Bellfield Avenue", "27 Orchard Close", "150 Harbourside Way"]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example"]


def _order_id(rng: random.Random) -> str:
    digits = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    kind = rng.randrange(7)
    if kind == 0:
        return f"ORD-{digits(6)}"
    if kind == 1:
        return f"{rng.choice('123456789')}{digits(7)}"
    if kind == 2:
        return f"WEB-{digits(5)}"
    if kind == 3:
        return f"A{digits(7)}"
    if kind == 4:
        return f"{rng.choice(LETTERS)}{rng.choice(LETTERS)}{digits(6)}"
    if kind == 5:
        return f"{digits(3)}-{digits(7)}"
    return f"SO{digits(6)}"


def _email(rng: random.Random, issue: str, urgency: str, kind: str, core: str) -> tuple[str, dict]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    name = f"{first} {last}"
    product = rng.choice(sorted(p for p, kinds in PRODUCTS.items() if not kind or kind in kinds))
    order = _order_id(rng) if "{order}" in core or rng.random() < 0.45 else None
    body = core.format(
        product=product, products=product if product.endswith("s") else product + "s", order=order
    )
    # Where the name goes: a signature (most), an introduction, or an email header.
    placement = rng.choices(["signature", "intro", "header"], weights=[6, 3, 1])[0]
    lines: list[str] = []
    handle = f"{first.lower()}.{last.lower().replace(chr(39), '')}@{rng.choice(DOMAINS)}"
    if placement == "header":
        lines.append(f"From: {name} <{handle}>")
    order_spot = "inline" if "{order}" in core else rng.choice(["subject", "line", "ps", "signature"])
    if order is None:
        order_spot = "none"
    if order_spot == "subject" or rng.random() < 0.3:
        short = product.split(" ", 1)[1]
        subject = rng.choice(SUBJECTS).format(short=short)
        if order_spot == "subject":
            subject += rng.choice([f" - order {order}", f" ({order})", f" [{order}]"])
        lines.append(f"Subject: {subject}")
    if lines:
        lines.append("")
    greeting = rng.choice(GREETINGS)
    paragraph = body
    if rng.random() < 0.15:
        paragraph = rng.choice(RAMBLE_BEFORE) + rng.choice([" ", "\n\n"]) + paragraph
    if rng.random() < 0.15:
        paragraph += rng.choice([" ", "\n\n"]) + rng.choice(RAMBLE_AFTER)
    if placement == "intro":
        paragraph = rng.choice(INTROS).format(name=name) + " " + paragraph
    if order and order_spot == "line":
        paragraph += rng.choice([" ", "\n\n"]) + rng.choice(ORDER_LINES).format(order=order)
    if greeting:
        lines.append(greeting if rng.random() < 0.7 else greeting.rstrip(","))
        lines.append("")
    lines.append(paragraph)
    lines.append("")
    signoff = rng.choice(SIGNOFFS)
    if placement == "signature":
        lines.append(f"{signoff}\n{name}")
        if rng.random() < 0.25:
            lines.append(
                rng.choice(TAILS).format(
                    phone=rng.randint(1000, 9999),
                    flat=rng.randint(1, 40),
                    street=rng.choice(STREETS),
                    name_lower=handle.split("@")[0],
                )
            )
    else:  # the name is already there: sign with the first name, or not at all
        lines.append(rng.choice([f"{signoff}\n{first}", f"{signoff}\n{first}", signoff, f"- {first}"]))
    if order and order_spot == "signature":
        lines.append(f"Order: {order}")
    if order and order_spot == "ps":
        lines.append(f"\nPS {rng.choice(['my order number is', 'order no. is', 'the order was'])} {order}")
    answer = {"name": name, "product": product, "issue": issue, "urgency": urgency, "order_id": order}
    return "\n".join(lines).strip(), answer


def make_extraction(rng: random.Random) -> list[dict]:
    rows = []
    for issue in sorted(EMAILS):
        for urgency, kind, core in EMAILS[issue]:
            text, answer = _email(rng, issue, urgency, kind, core)
            rows.append(_row(EXTRACT_SYSTEM, text, json.dumps(answer, ensure_ascii=False)))
    rng.shuffle(rows)
    return _unique(rows)


# ---------------------------------------------------------------------------------------------
# sentiment.jsonl: product review -> positive / negative (prompting is enough)
# ---------------------------------------------------------------------------------------------

SENTIMENT_SYSTEM = "Classify the sentiment of the review. Reply with one word: positive or negative."

REVIEWS: dict[str, list[str]] = {
    "positive": [
        "Does exactly what it says on the box. Set it up in five minutes and haven't thought about it since.",
        "My third one of these. I keep buying them as gifts because everyone who sees mine wants one.",
        "Honestly the best kettle I've owned. Boils fast, pours without dribbling, and it's quiet.",
        "Fits perfectly, the stitching is neat and it still looks new after a winter of daily use.",
        "Bought this for my dad, who hates gadgets. He now texts me pictures of the bread he makes with it.",
        "Arrived a day early and works like a charm.",
        "I was sceptical about the price but it has paid for itself already. Zero regrets.",
        "Comfy from the very first wear, no breaking in needed. Walked 15 km on day one with no blisters.",
        "The battery lasts way longer than advertised. I charge it once a week at most.",
        "So much better than the cheap one it replaced. Sturdy, simple and it just works.",
        "Sound quality blew me away for something this small. Podcasts, music, calls, all crisp.",
        "my kids fight over who gets to use it, which says it all really",
        "Solid build, clear instructions, and customer service answered my one question within an hour.",
        "Would give six stars if I could.",
        "It's not the prettiest thing on the counter, but the coffee it makes is superb and it cleans up in a minute.",
        "Finally a backpack that doesn't hurt my shoulders after a full day of walking around a city.",
        "Ten out of ten. Already ordered a second one for the office.",
        "Light, bright and the colours are exactly as pictured. Our living room feels twice as big.",
        "Took a chance on an unknown brand and I'm really glad I did.",
        "The app is easy to use even for my grandmother, and that is saying something.",
        "Runs cool and silent even under heavy load. Exactly what I wanted for my home office.",
        "Great value. Feels more expensive than it was.",
        "I've dropped it twice on tiles and it still works perfectly. Tough little thing.",
        "Keeps my tea hot for hours. I filled it at 7am and it was still too hot to drink at lunchtime.",
        "Genuinely improved my sleep. The room is dark, quiet and cool now.",
        "This chair saved my back. After two weeks the ache I'd had for months is gone.",
        "Easy returns weren't needed, because it was perfect first time.",
        "Five stars. No notes.",
        "Picked it up on a whim and now I use it every single day.",
        "The dog has tried very hard to destroy it and failed. Impressive.",
        "Assembly was a breeze, every screw was labelled, and nothing was missing.",
        "Smells lovely, lasts for ages, and a little goes a long way.",
        "Clear picture, even at night. We can actually see who's at the gate now.",
        "Crisp, responsive, and the keys have a really satisfying click. Typing is a joy.",
        "Love it!!! Exactly as described and so cute in person.",
        "I was worried it would be too small, but it holds my laptop, lunch, a jumper and a book with room to spare.",
        "Quietest fan I've ever had. I forget it's on until I notice the room is cool.",
        "Replaced my old blender with this and the smoothies are actually smooth now, no bits of kale.",
        "Two years of daily use and not a single problem. Built to last.",
        "The fit is spot on and the fabric is soft without being flimsy.",
        "Perfect for a small flat. Folds away in seconds and takes up no space.",
        "Charges my phone, watch and earbuds at once, and it's tidied up my bedside table no end.",
        "This thing is brilliant on camping trips. Light, bright, and the battery lasted the whole weekend.",
        "I really didn't expect the sound to be this rich. Very happy.",
        "Bought it for the price, kept it for the quality.",
        "The tracking is accurate, the strap is comfy and it doesn't nag me every five minutes.",
        "Cooks rice perfectly every time. I used to burn it constantly.",
        "A very thoughtful design, down to the little hook for hanging it up.",
        "We've had it a month and the floors have never been cleaner. The cat has accepted it too.",
        "good quality for the money, would recomend",
        "Stylish, practical and it doesn't slide around on the desk.",
        "Took it on a week-long hike and it kept everything dry through two days of rain.",
        "Beautifully made. You can tell someone cared about the details.",
        "The heat settings are spot on, and my hair feels healthier than with the old dryer.",
        "Exceeded my expectations in every way.",
        "So easy to clean. Everything goes in the dishwasher.",
        "My partner rolled his eyes when I bought it. Now he uses it more than I do.",
        "Reliable and fast. Does the job without fuss.",
        "I've recommended this to everyone at work.",
        "Set up was a little fiddly, but once it's running it is fantastic. Worth the twenty minutes.",
        "It's held up to three toddlers. Enough said.",
        "These pans heat evenly and nothing sticks. Eggs slide right off.",
        "Warm, light and packs down into its own pocket. Ideal for travel.",
        "Delighted. It looks great in the hallway and the light is warm rather than harsh.",
        "Stopped the squeak in my door in seconds. Why didn't I buy this years ago?",
        "The screen is sharp, the colours pop and it's a pleasure to watch films on.",
        "Sturdy frame, quick to put up, and it survived a properly windy night at the coast.",
        "Super comfortable for long video calls and the mic makes me sound clear.",
        "Pleasantly surprised. The instructions were clear and it worked first time.",
        "Nice weight to it, feels solid in the hand, and the grip is comfortable.",
        "Great little speaker. Goes with me from the kitchen to the garden to the shower.",
        "Makes my mornings so much easier. Coffee ready when I wake up.",
        "My plants have never looked healthier since I started using this.",
        "Works with everything I own, no adapters needed.",
        "Honestly thrilled with it. The quality is far beyond what I paid.",
        "The kids' artwork finally has a proper home. Sturdy and easy to hang.",
        "Gentle on my sensitive skin and no weird smell.",
        "Cuts through tomatoes like butter. Still sharp after months.",
        "Instructions were rubbish but the product itself is excellent. Keeping it.",
        "This mattress topper turned a saggy guest bed into the comfiest bed in the house.",
        "Arrived well packaged, looks premium, and my wife loved it as a birthday present.",
        "Fast shipping and the item is even better in person.",
        "Runs for hours on one charge and the suction is strong enough for the stairs carpet.",
        "Super intuitive. I didn't even need the manual.",
        "A real upgrade. Wish I'd bought it sooner.",
        "This lamp has made reading in bed so much nicer.",
        "Fits my big feet, which is rare. Comfortable all day at work.",
        "I use it every morning. Still going strong after a year.",
        "Kept the drinks ice cold through a whole day at the beach.",
        "The zip is smooth, the pockets are in the right places, and it looks smart for work.",
        "Bought it for my daughter's first flat. She rang to say thank you, twice.",
        "It's quiet enough that I can run it at night without waking anyone.",
        "Exactly the shade I wanted, and the finish is flawless.",
        "Does the job brilliantly and costs half what the big names charge.",
        "Perfect gift. Nicely boxed, so I didn't even need to wrap it.",
        "The grip on these gloves is fantastic, even on wet rope.",
        "Handles 4K video editing without breaking a sweat.",
        "So glad I switched. Everything just feels smoother.",
        "My back and neck thank me every day for this pillow.",
        "Lightweight, folds small, and it kept us dry in a proper downpour.",
        "It's a simple thing, but it has made my commute so much more pleasant.",
        "Bright, even light with no flicker. My eyes feel less tired at the end of the day.",
        "Well worth the wait. It was out of stock for weeks and I'd buy it again tomorrow.",
        "Brilliant customer service when I had a question, and the product is lovely too.",
        "I wasn't expecting much for the price, and it's been fantastic.",
        "Tough, waterproof and the battery lasts a full day of hiking with GPS on.",
        "Very pleased. It's exactly what I needed for the garden shed.",
        "The colour is gorgeous and it matches the rest of our kitchen perfectly.",
        "Used it for a month now. Zero complaints, many compliments.",
        "I'll be honest, I nearly sent it back on day one because the setup confused me. Glad I didn't. A month later it's the thing I'd grab first in a fire. Quiet, quick, and my energy bill has actually gone down.",
        "We have a very old, very draughty house and this heater is the first thing that has made the back bedroom usable in winter. It warms the room in about ten minutes, the thermostat holds steady, and it doesn't dry the air out. Buying a second.",
        "Bought these running shoes after my old pair gave me shin splints. Three weeks in: no pain, faster times, and they still look clean after muddy park runs. The only downside is the laces are a bit long, which I can live with.",
        "The delivery driver was grumpy, but that's hardly the product's fault. The desk itself is rock solid, went together in 40 minutes, and the height adjustment is smooth and silent. Exactly what I hoped for.",
        "My mum is partially sighted and struggles with most phones. This one has big buttons, a loud ringer and a really clear screen. She rang me from it the day it arrived just to say how easy it was. That made my week.",
        "Cheap and cheerful? More like cheap and brilliant. I use it for meal prep every Sunday, it chops a week of vegetables in minutes, and all the bits go in the dishwasher.",
        "After trying four different pillows this year, this is the one. Supportive without being hard, stays cool, and I've stopped waking up with a stiff neck.",
        "The tent went up in under ten minutes on our first try, in the dark, with two tired kids helping. Stayed dry through a stormy night too. Couldn't ask for more.",
    ],
    "negative": [
        "Stopped working after two weeks. The light comes on and that's it.",
        "The photos made it look twice the size. It's tiny, and it feels like it would snap if you sneezed on it.",
        "Returned it. The noise was unbearable, like a jet engine in the kitchen.",
        "Waited three weeks for delivery and it arrived with a cracked lid.",
        "Don't waste your money.",
        "Battery lasts about two hours, not the twelve they claim. Useless for a day out.",
        "The strap broke the first time I put my bag on my shoulder.",
        "Customer service never replied to any of my four emails. The product is still broken.",
        "Cheap plastic, rough edges, and one of the legs was bent straight out of the box.",
        "It made my coffee taste like metal no matter how many times I rinsed it.",
        "The app crashes constantly and half the features described on the box don't exist.",
        "Shoes fell apart at the seam after a month of light walking. Very disappointed.",
        "I wanted to love this but it just doesn't work as advertised.",
        "Smells awful, like burning rubber, every time it heats up.",
        "Leaked all over my bag on the first day. Ruined a notebook and my charger.",
        "Nothing like the picture. The colour is a sickly yellow, not cream.",
        "Assembly instructions were missing and two screws were the wrong size. Gave up after an hour.",
        "The Bluetooth keeps dropping out every few minutes. Unusable for calls.",
        "Way too loud, way too slow, and it scratched my countertop.",
        "Overpriced for what it is. A cheap supermarket one does the same job.",
        "Arrived dead. Wouldn't even turn on.",
        "Sizes run really small. Ordered my usual and couldn't get my foot in.",
        "The fabric pilled after one wash and now it looks ten years old.",
        "Within a week the screen had a line of dead pixels down the middle.",
        "What a letdown. It heats unevenly and burns everything on one side.",
        "total waste of money, broke on day 3",
        "Tried three times to pair it with my phone. Never worked. Sent it back.",
        "The handle gets so hot you can't touch it. Dangerous design.",
        "Suction is pathetic. It just pushes the crumbs around.",
        "It wobbles on a perfectly flat floor and creaks every time I move.",
        "The refund took six weeks and three phone calls. Never again.",
        "Feels flimsy and the buttons stick. Regret buying it.",
        "The smell of chemicals when I opened the box was so strong I had to leave it outside for days.",
        "Filter clogged within a week and replacements cost almost as much as the unit.",
        "Keeps disconnecting from the Wi-Fi, so my heating schedule is basically random.",
        "My kids were bored of it within an hour, and a piece had already snapped off.",
        "One star because zero isn't an option.",
        "The lid doesn't seal. Soup everywhere. In my car.",
        "The mattress sagged in the middle within a month. My back has never been worse.",
        "Blades went dull after a handful of uses. Can't even cut bread now.",
        "The zip broke on the first trip, leaving my stuff hanging out at the airport.",
        "Tastes nothing like the description. Bitter and chalky.",
        "Instructions were in tiny print and made no sense. The thing itself barely works anyway.",
        "It charges so slowly that it's quicker to use the old cable.",
        "I've had better headphones free with a phone. Tinny and uncomfortable.",
        "The coating started peeling off the pan after a few weeks. Now there are black flakes in my food.",
        "Stitches came loose on the first wash. Poor quality all round.",
        "Louder than my old one, uses more power, and the timer doesn't work.",
        "It's beautiful to look at but completely impractical. Nothing fits in it.",
        "Ordered a large, got a small, and the return label never arrived.",
        "Not worth half the price. Feels like a toy.",
        "Constant notifications, an app that wants my contacts, and it still can't count steps properly.",
        "Gave me a rash within an hour. Threw it away.",
        "The light is so harsh and blue it gives me a headache.",
        "Motor burned out the second time I made nut butter. Smoke and everything.",
        "Scratches if you so much as look at it.",
        "After the update it forgot all my settings and now it won't connect at all.",
        "They sent a used one with someone else's hair in it. Disgusting.",
        "The speaker crackles at anything above half volume.",
        "I really regret this purchase. Clunky, heavy and awkward to use.",
        "It rattles. Constantly. I can hear it from the next room.",
        "Flimsy frame bent the first time it was windy. Now it's in the bin.",
        "Such a disappointment after all the hype.",
        "The seat is rock hard and the armrests wobble. My back aches after an hour.",
        "Took ages to arrive and then didn't fit the model it said it was compatible with.",
        "Camera picture is grainy even in daylight. At night you can't make out faces at all.",
        "Wouldn't recommend. Started squeaking after a week and hasn't stopped.",
        "The drawer sticks, the doors don't line up, and one panel arrived split.",
        "Poor quality control. Mine had a dead pixel and so did the replacement.",
        "Worked fine for a month and then it just died. Out of the return window, of course.",
        "The colour ran in the first wash and turned all my whites pink.",
        "Grinds unevenly, half powder and half whole beans. Can't make a decent cup.",
        "meh. cheap, flimsy, and the wheels fell off within a week",
        "Absolutely useless in the rain, which is the one thing a rain jacket should handle.",
        "I have never been so frustrated setting something up. Three hours, still not working.",
        "The box said dishwasher safe. It came out warped.",
        "Feels like it's going to tip over every time I lean back.",
        "Battery swelled up after four months. Actually scary.",
        "Way too heavy to carry around, the handle digs into your hand.",
        "The promised features are all behind a monthly subscription. Feels like a bait and switch.",
        "Keeps beeping at random in the middle of the night for no reason.",
        "I was expecting much more. It's slow and clunky and crashes when you open two apps.",
        "Thin, see-through and nothing like the thick cotton in the photos.",
        "Hair dryer gets so hot it burnt my scalp on the lowest setting.",
        "Nothing but problems since the day it arrived.",
        "Threads came loose and the buttons fell off within days.",
        "The remote stopped responding after a week, and a new battery didn't help.",
        "Broken on arrival and the courier left it in the rain.",
        "Plastic smell never went away and now my water tastes of it.",
        "Sound is muffled, bass is non-existent. Back in the box it goes.",
        "Uncomfortable, pinches my ears after twenty minutes.",
        "The clasp snapped the first time I wore it. Lost the charm somewhere in town.",
        "It just doesn't hold a charge. Full at night, dead by breakfast.",
        "Great idea, terrible execution. The hinge broke within days.",
        "The seller refused a return even though it was faulty.",
        "Leaves streaks all over the glass, worse than using a cloth.",
        "Too small for a standard plate, which makes it useless as a microwave cover.",
        "The wheels squeak and the handle jams when you try to extend it.",
        "I'd give it a zero if I could. Faulty, loud and overpriced.",
        "Within a week it started dripping water onto the floor.",
        "The paint is already chipping off and it's only been on the wall a month.",
        "They changed the recipe. It used to be good and now it's just sugar.",
        "Unreliable. Works one day, dead the next, works again after a reset.",
        "Not worth the hassle. I went back to my old one.",
        "The cushions went flat within a fortnight. Like sitting on a plank.",
        "Froze every time I tried to update it. Support said 'try again later'.",
        "Lasted exactly one season before the sole came away.",
        "Arrived late, poorly packaged, and missing the charger.",
        "Cheaply made, and it looks it.",
        "I really wanted this to work. It looked great, the reviews were good, and the first week was fine. Then it started switching off at random, the app stopped recognising it, and support just sent me the same troubleshooting link three times. Returned.",
        "The listing said 'solid oak'. It is veneer over chipboard, and the veneer was already lifting at one corner when it came out of the box. For this price I expected the real thing. Very misleading.",
        "We bought this air fryer to replace our oven for small meals. Everything comes out soggy in the middle and burnt on the edges, it takes twice as long as the recipes say, and the basket coating is already scratched after a fortnight.",
        "Ordered for my son's birthday. It arrived two days late, the box was crushed, and one of the wheels was missing. He was heartbroken. The replacement still hasn't come.",
        "The fit is fine and the colour is nice, I'll give it that. But the material is so thin you can see through it, and after two washes it has shrunk a full size. Going in the charity bag.",
        "Sleek design, but that's where the good news ends. The battery drains overnight even when it's switched off, the charging port is already loose, and the buttons are so stiff I need two hands.",
        "I've had this vacuum for three months. It now makes a horrible screeching noise, loses suction after five minutes and smells like burning dust. Honestly I'd rather sweep.",
        "Looked nothing like the picture when it arrived, the print was blurry and off-centre, and the frame had a chip in it. I contacted the seller and got a one-line reply offering 10% off my next order. No thanks.",
        "The kettle takes forever to boil and the lid won't stay shut.",
    ],
}


def make_sentiment(rng: random.Random) -> list[dict]:
    rows = [_row(SENTIMENT_SYSTEM, text, label) for label in sorted(REVIEWS) for text in REVIEWS[label]]
    rng.shuffle(rows)
    return _unique(rows)


# ---------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


DATASETS = {
    "prices.jsonl": (make_prices, SEED),
    "extraction.jsonl": (make_extraction, SEED + 1),
    "labels.jsonl": (make_labels, SEED + 2),
    "sentiment.jsonl": (make_sentiment, SEED + 3),
}


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    # One generator per file, so changing one dataset does not change the others.
    for name, (make, seed) in DATASETS.items():
        write_jsonl(out / name, make(random.Random(seed)))
        lines = sum(1 for _ in (out / name).open(encoding="utf-8"))
        print(f"{out / name}: {lines} examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
