"""Make the example datasets in this folder, deterministically (same bytes on every run).

    python examples/make_examples.py [OUTPUT_DIR]     # default: this folder

- prices.jsonl      product description -> retail price in US dollars ("349.00"): the guide's price
                    estimator. Prices follow the product's category, brand tier and features, plus
                    noise, so a model can learn the pattern but not memorise an answer key.
- extraction.jsonl  a customer support email -> a fixed-schema JSON object
                    {"name", "product", "issue", "urgency", "order_id"} (order_id null when absent).
- labels.jsonl      a short customer message -> the team that should handle it (one of five labels).

Brands and products are invented, so no answer claims a real product's price. Each dataset has one
system prompt used on every line, as a real fine-tuning set would.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 20261128

# ---------------------------------------------------------------------------------------------
# prices.jsonl
# ---------------------------------------------------------------------------------------------

PRICE_SYSTEM = (
    "You estimate the retail price of a product in US dollars from its listing. "
    "Reply with the price only, as a number with two decimals, for example 349.00."
)

# brand -> price multiplier (budget, mid-range, premium)
BRANDS = {
    "budget": (["Valuline", "Brisko", "Homely", "Zentro", "Kova"], 0.6),
    "mid": (["Northway", "Altura", "Pellham", "Corvex", "Lumio"], 1.0),
    "premium": (["Sterling & Hale", "Aurion", "Maison Verre", "Helix Pro", "Oberon"], 1.9),
}

# category -> (base price, noun variants, [(attribute name, [(value, price multiplier), ...]), ...])
CATEGORIES: dict[str, tuple[float, list[str], list[tuple[str, list[tuple[str, float]]]]]] = {
    "laptop": (
        650,
        ["laptop", "notebook", "ultrabook"],
        [
            ("screen", [("13.3-inch", 0.95), ("14-inch", 1.0), ("15.6-inch", 1.05), ("16-inch", 1.15)]),
            ("memory", [("8 GB RAM", 0.85), ("16 GB RAM", 1.0), ("32 GB RAM", 1.35)]),
            ("storage", [("256 GB SSD", 0.9), ("512 GB SSD", 1.0), ("1 TB SSD", 1.2)]),
            (
                "extra",
                [
                    ("backlit keyboard", 1.0),
                    ("touchscreen", 1.12),
                    ("dedicated graphics card", 1.4),
                    ("fingerprint reader", 1.03),
                ],
            ),
        ],
    ),
    "headphones": (
        90,
        ["wireless headphones", "over-ear headphones", "earbuds"],
        [
            ("noise", [("no noise cancelling", 0.8), ("active noise cancelling", 1.3)]),
            ("battery", [("20-hour battery", 0.9), ("30-hour battery", 1.0), ("50-hour battery", 1.15)]),
            ("extra", [("carrying case", 1.0), ("multipoint Bluetooth", 1.08), ("spatial audio", 1.2)]),
        ],
    ),
    "coffee maker": (
        70,
        ["drip coffee maker", "espresso machine", "pour-over brewer"],
        [
            ("capacity", [("4-cup", 0.8), ("10-cup", 1.0), ("14-cup", 1.15)]),
            (
                "feature",
                [
                    ("programmable timer", 1.1),
                    ("built-in grinder", 1.6),
                    ("milk frother", 1.45),
                    ("thermal carafe", 1.2),
                ],
            ),
            ("material", [("plastic housing", 0.85), ("stainless steel housing", 1.15)]),
        ],
    ),
    "office chair": (
        180,
        ["office chair", "ergonomic desk chair", "task chair"],
        [
            ("support", [("fixed lumbar support", 0.9), ("adjustable lumbar support", 1.1)]),
            ("armrests", [("fixed armrests", 0.85), ("3D armrests", 1.0), ("4D armrests", 1.2)]),
            ("material", [("mesh back", 1.0), ("bonded leather", 1.1), ("full-grain leather", 1.6)]),
        ],
    ),
    "running shoes": (
        85,
        ["running shoes", "trail running shoes", "road racing shoes"],
        [
            ("cushion", [("light cushioning", 0.9), ("max cushioning", 1.15)]),
            ("plate", [("no plate", 1.0), ("carbon plate", 1.9)]),
            ("extra", [("reflective details", 1.0), ("waterproof upper", 1.2), ("wide fit available", 1.0)]),
        ],
    ),
    "television": (
        420,
        ["LED TV", "QLED TV", "OLED TV"],
        [
            ("size", [("43-inch", 0.6), ("55-inch", 1.0), ("65-inch", 1.5), ("77-inch", 2.6)]),
            ("resolution", [("1080p", 0.7), ("4K", 1.0), ("8K", 2.2)]),
            ("refresh", [("60 Hz", 0.9), ("120 Hz", 1.15)]),
        ],
    ),
    "blender": (
        60,
        ["countertop blender", "personal blender", "high-speed blender"],
        [
            ("power", [("600 W", 0.8), ("1000 W", 1.0), ("1500 W", 1.35)]),
            ("jar", [("plastic jar", 0.9), ("glass jar", 1.05), ("two travel cups", 0.95)]),
            ("extra", [("preset programs", 1.12), ("self-cleaning mode", 1.05), ("pulse button", 1.0)]),
        ],
    ),
    "backpack": (
        55,
        ["daypack", "laptop backpack", "hiking backpack"],
        [
            ("volume", [("18 L", 0.85), ("25 L", 1.0), ("35 L", 1.2)]),
            ("material", [("polyester", 0.85), ("ripstop nylon", 1.05), ("waxed canvas", 1.35)]),
            ("extra", [("padded laptop sleeve", 1.05), ("rain cover", 1.1), ("lifetime warranty", 1.25)]),
        ],
    ),
    "cordless drill": (
        95,
        ["cordless drill", "drill driver", "hammer drill"],
        [
            ("voltage", [("12 V", 0.75), ("18 V", 1.0), ("20 V max", 1.1)]),
            (
                "battery",
                [
                    ("one 2.0 Ah battery", 0.9),
                    ("two 2.0 Ah batteries", 1.1),
                    ("two 5.0 Ah batteries", 1.4),
                    ("tool only, no battery", 0.6),
                ],
            ),
            ("motor", [("brushed motor", 0.9), ("brushless motor", 1.25)]),
        ],
    ),
    "smartwatch": (
        170,
        ["smartwatch", "fitness watch", "GPS sports watch"],
        [
            ("display", [("LCD display", 0.8), ("AMOLED display", 1.05), ("always-on AMOLED display", 1.15)]),
            ("connectivity", [("Bluetooth only", 0.9), ("built-in GPS", 1.1), ("LTE", 1.45)]),
            ("case", [("aluminium case", 1.0), ("titanium case", 1.7), ("polymer case", 0.85)]),
        ],
    ),
}

COLORS = ["black", "white", "graphite", "navy", "silver", "forest green", "sand", "red"]
CONDITIONS = [("new", 1.0)] * 6 + [("renewed, like new", 0.78), ("open box", 0.88)]
TEMPLATES = [
    "{brand} {model} {noun}, {a0}, {a1}, {a2}. Color: {color}. Condition: {condition}.",
    "{brand} {model} - {noun} with {a0} and {a1}; {a2}. {color_cap}. {condition_cap}.",
    "Title: {brand} {model} {noun}\nFeatures:\n- {a0}\n- {a1}\n- {a2}\nColor: {color}\nCondition: {condition}",
    "{condition_cap} {brand} {noun} ({model}) in {color}. Highlights: {a0}, {a1}, {a2}.",
    "Listing: {brand} {model}. Type: {noun}. Specs: {a0} | {a1} | {a2}. Finish: {color}. {condition_cap}.",
]


def _price(rng: random.Random) -> tuple[str, float]:
    category = rng.choice(sorted(CATEGORIES))
    base, nouns, attributes = CATEGORIES[category]
    tier = rng.choices(["budget", "mid", "premium"], weights=[3, 4, 2])[0]
    brands, tier_mult = BRANDS[tier]
    brand = rng.choice(brands)
    price = base * tier_mult
    picked = []
    for _name, values in attributes:
        value, mult = rng.choice(values)
        picked.append(value)
        price *= mult
    condition, cond_mult = rng.choice(CONDITIONS)
    price *= cond_mult * rng.uniform(0.9, 1.1)  # the market is noisy; no model gets it exactly
    # Retail endings: .99 for most, .00 for premium brands, .49 now and then.
    dollars = max(5, round(price))
    cents = 0 if tier == "premium" else rng.choice([99, 99, 99, 49, 0])
    if cents:
        dollars -= 1
    model = (
        f"{rng.choice('ABCDEFGHJKLMNPRSTVXZ')}{rng.choice('ABCDEFGHJKLMNPRSTVXZ')}-{rng.randint(100, 990)}"
    )
    rng.shuffle(picked)
    color = rng.choice(COLORS)
    text = rng.choice(TEMPLATES).format(
        brand=brand,
        model=model,
        noun=rng.choice(nouns),
        a0=picked[0],
        a1=picked[1],
        a2=picked[2],
        color=color,
        color_cap=color.capitalize(),
        condition=condition,
        condition_cap=condition.capitalize(),
    )
    return text, dollars + cents / 100


def make_prices(rng: random.Random, count: int = 320) -> list[dict]:
    rows, seen = [], set()
    while len(rows) < count:
        text, price = _price(rng)
        if text in seen:
            continue
        seen.add(text)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": PRICE_SYSTEM},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": f"{price:.2f}"},
                ]
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# extraction.jsonl
# ---------------------------------------------------------------------------------------------

EXTRACT_SYSTEM = (
    "You read customer support emails and extract a JSON object with exactly these keys: "
    '"name" (the customer\'s full name), "product" (the product they write about), '
    '"issue" (one of "billing", "login", "shipping", "defect", "refund", "setup"), '
    '"urgency" ("low", "medium" or "high") and "order_id" (the order number as written, or null). '
    "Reply with the JSON object only."
)

FIRST = [
    "Maria",
    "James",
    "Priya",
    "Chen",
    "Fatima",
    "Lukas",
    "Aisha",
    "Diego",
    "Hannah",
    "Kwame",
    "Sofia",
    "Tomasz",
    "Yuki",
    "Oliver",
    "Amara",
    "Mateo",
    "Ingrid",
    "Ravi",
    "Leila",
    "Samuel",
    "Nadia",
    "Jonas",
]
LAST = [
    "Okafor",
    "Lindqvist",
    "Nair",
    "Wei",
    "Haddad",
    "Brenner",
    "Mensah",
    "Alvarez",
    "Kowalski",
    "Tanaka",
    "Rossi",
    "O'Brien",
    "Dubois",
    "Petrov",
    "Silva",
    "Andersen",
    "Kapoor",
    "Moreau",
    "Nguyen",
    "Fischer",
]
PRODUCTS = [
    "Lumio Smart Thermostat",
    "Corvex Robot Vacuum",
    "Altura Air Purifier",
    "Northway E-Bike 500",
    "Pellham Espresso Pro",
    "Kova Video Doorbell",
    "Brisko Fitness Tracker",
    "Helix Pro Router",
    "Zentro Baby Monitor",
    "Aurion Soundbar",
    "Homely Smart Lock",
    "Valuline Electric Kettle",
]

ISSUES = {
    "billing": [
        "I was charged twice for my {product} this month and I only have one subscription.",
        "My card statement shows a charge of ${amount} for the {product} plan that I never agreed to.",
        "The invoice for my {product} has the wrong company name and VAT number on it.",
    ],
    "login": [
        "I can't sign in to the app for my {product}; it keeps saying my password is wrong even after a reset.",
        "The two-factor code for my {product} account never arrives, so I'm locked out.",
        "After the latest update the {product} app logs me out every few minutes.",
    ],
    "shipping": [
        "My {product} was supposed to arrive {days} days ago and the tracking hasn't moved since.",
        "The tracking page says my {product} was delivered but there is nothing at my door.",
        "I received the wrong item: I ordered a {product} and got a phone case.",
    ],
    "defect": [
        "My {product} stopped working after {days} days. It won't power on at all.",
        "The {product} makes a loud grinding noise and smells like burning plastic.",
        "The screen on my {product} flickers and then goes black.",
    ],
    "refund": [
        "I returned the {product} {days} days ago and still haven't received my refund.",
        "I'd like to return my {product} for a refund; it doesn't suit my needs.",
        "You promised a partial refund for the late {product} delivery but it never came through.",
    ],
    "setup": [
        "I can't get my {product} to connect to my Wi-Fi during setup; it fails at the last step.",
        "How do I pair the {product} with my phone? The instructions in the box don't match the app.",
        "The {product} setup wizard asks for a code that isn't anywhere on the device.",
    ],
}
URGENCY = {
    "high": [
        "This is urgent, please help today.",
        "I need this fixed ASAP.",
        "Please treat this as urgent - it's affecting my whole household.",
        "URGENT: please call me back.",
    ],
    "medium": [
        "Could you look into this this week?",
        "I'd appreciate a reply soon.",
        "Please let me know what the next steps are.",
    ],
    "low": [
        "No rush, whenever you get a chance.",
        "It's not urgent, just wanted to let you know.",
        "Low priority, but I'd like it sorted eventually.",
    ],
}
GREETINGS = ["Hi,", "Hello,", "Dear support team,", "Hi there,", "Good morning,", "Hey,"]
SIGNOFFS = [
    "Thanks,\n{name}",
    "Best regards,\n{name}",
    "Cheers,\n{name}",
    "Kind regards,\n{name}",
    "- {name}",
    "Thank you,\n{name}",
]


def _ticket(rng: random.Random) -> tuple[str, dict]:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    product = rng.choice(PRODUCTS)
    issue = rng.choice(sorted(ISSUES))
    urgency = rng.choices(["low", "medium", "high"], weights=[2, 3, 2])[0]
    body = rng.choice(ISSUES[issue]).format(
        product=product, days=rng.randint(3, 21), amount=rng.randint(9, 199)
    )
    order_id = None
    if rng.random() < 0.6:
        order_id = f"{rng.choice(['ORD', 'A', '#', 'WEB-'])}{rng.randint(10000, 999999)}"
        body += rng.choice(
            [f" My order number is {order_id}.", f" (Order {order_id})", f" Order ref: {order_id}."]
        )
    parts = [rng.choice(GREETINGS)]
    intro_name = rng.random() < 0.3
    if intro_name:
        parts.append(f"This is {name}.")
    parts.append(body)
    parts.append(rng.choice(URGENCY[urgency]))
    sep = rng.choice([" ", "\n\n"])
    text = sep.join(parts)
    text += "\n\n" + (rng.choice(SIGNOFFS).format(name=name.split()[0] if intro_name else name))
    return text, {"name": name, "product": product, "issue": issue, "urgency": urgency, "order_id": order_id}


def make_extraction(rng: random.Random, count: int = 300) -> list[dict]:
    rows, seen = [], set()
    while len(rows) < count:
        text, answer = _ticket(rng)
        if text in seen:
            continue
        seen.add(text)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": EXTRACT_SYSTEM},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)},
                ]
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# labels.jsonl
# ---------------------------------------------------------------------------------------------

LABEL_SYSTEM = (
    "Route each customer message to the team that should handle it. Reply with one word: "
    "billing, technical, shipping, account or sales."
)
ROUTES = {
    "billing": [
        "Why was I charged {amount} dollars on the {day}?",
        "Can I get an invoice for last month's payment?",
        "My discount code wasn't applied at checkout.",
        "I was billed after cancelling my plan.",
        "Do you accept bank transfers for the annual plan?",
    ],
    "technical": [
        "The {product} keeps disconnecting from Wi-Fi.",
        "The app crashes when I open settings.",
        "Firmware update failed on my {product}.",
        "My {product} shows error code E{code}.",
        "The {product} battery drains overnight.",
    ],
    "shipping": [
        "Where is my package? It's been {days} days.",
        "Can I change the delivery address for my order?",
        "The box arrived damaged.",
        "Do you ship the {product} to Canada?",
        "Tracking says delivered but I have nothing.",
    ],
    "account": [
        "How do I change the email on my account?",
        "Please delete my account and my data.",
        "I can't reset my password.",
        "Can I add a second user to my account?",
        "I want to merge two accounts.",
    ],
    "sales": [
        "Do you offer volume discounts for 50 units of the {product}?",
        "Is the {product} coming back in stock?",
        "What's the difference between the {product} and the Pro?",
        "Can I get a quote for our office?",
        "Do you have a student discount?",
    ],
}
OPENERS = ["", "Hi, ", "Hello! ", "Quick question: ", "Hey team, ", "Sorry to bother you, "]
CLOSERS = ["", " Thanks.", " Thanks in advance!", " Cheers.", " Please advise."]


def make_labels(rng: random.Random, count: int = 200) -> list[dict]:
    rows, seen = [], set()
    while len(rows) < count:
        label = rng.choice(sorted(ROUTES))
        text = (
            rng.choice(OPENERS)
            + rng.choice(ROUTES[label]).format(
                amount=rng.randint(5, 300),
                day=f"{rng.randint(1, 28)}th",
                product=rng.choice(PRODUCTS),
                code=rng.randint(10, 99),
                days=rng.randint(3, 30),
            )
            + rng.choice(CLOSERS)
        )
        if text in seen:
            continue
        seen.add(text)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": LABEL_SYSTEM},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": label},
                ]
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    # One generator per file, so changing one dataset does not change the others.
    write_jsonl(out / "prices.jsonl", make_prices(random.Random(SEED)))
    write_jsonl(out / "extraction.jsonl", make_extraction(random.Random(SEED + 1)))
    write_jsonl(out / "labels.jsonl", make_labels(random.Random(SEED + 2)))
    for name in ("prices.jsonl", "extraction.jsonl", "labels.jsonl"):
        lines = sum(1 for _ in (out / name).open(encoding="utf-8"))
        print(f"{out / name}: {lines} examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
