"""The small instruction dataset kairo ships in `examples/data/`: facts a tiny model can learn by heart.

Capitals of countries, sums and products of small numbers, colours of things — a few hundred short,
consistent question/answer pairs, so a quick fine-tune visibly changes what the model says ("What is
the capital of France?" → "The capital of France is Paris."). Everything here is written out by
`write_examples()`; tests/test_example_data.py checks the committed files match it
(`KAIRO_REGENERATE=1` rewrites them).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("the United Kingdom", "London"), ("Ireland", "Dublin"),
    ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Switzerland", "Bern"),
    ("Austria", "Vienna"), ("Poland", "Warsaw"), ("the Czech Republic", "Prague"), ("Slovakia", "Bratislava"),
    ("Hungary", "Budapest"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Greece", "Athens"),
    ("Turkey", "Ankara"), ("Denmark", "Copenhagen"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Iceland", "Reykjavík"), ("Estonia", "Tallinn"), ("Latvia", "Riga"),
    ("Lithuania", "Vilnius"), ("Ukraine", "Kyiv"), ("Croatia", "Zagreb"), ("Serbia", "Belgrade"),
    ("Slovenia", "Ljubljana"), ("Albania", "Tirana"), ("Russia", "Moscow"), ("Cyprus", "Nicosia"),
    ("Malta", "Valletta"), ("Georgia", "Tbilisi"), ("Armenia", "Yerevan"), ("Azerbaijan", "Baku"),
    ("Kazakhstan", "Astana"), ("Uzbekistan", "Tashkent"), ("Mongolia", "Ulaanbaatar"), ("Egypt", "Cairo"),
    ("Morocco", "Rabat"), ("Algeria", "Algiers"), ("Tunisia", "Tunis"), ("Nigeria", "Abuja"),
    ("Ghana", "Accra"), ("Kenya", "Nairobi"), ("Ethiopia", "Addis Ababa"), ("Senegal", "Dakar"),
    ("Uganda", "Kampala"), ("Zimbabwe", "Harare"), ("Angola", "Luanda"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("South Korea", "Seoul"), ("India", "New Delhi"), ("Pakistan", "Islamabad"),
    ("Bangladesh", "Dhaka"), ("Nepal", "Kathmandu"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
    ("the Philippines", "Manila"), ("Malaysia", "Kuala Lumpur"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"), ("Jordan", "Amman"), ("Lebanon", "Beirut"), ("Syria", "Damascus"),
    ("Afghanistan", "Kabul"), ("Qatar", "Doha"), ("Oman", "Muscat"), ("Australia", "Canberra"),
    ("New Zealand", "Wellington"), ("Canada", "Ottawa"), ("the United States", "Washington, D.C."),
    ("Mexico", "Mexico City"), ("Cuba", "Havana"), ("Jamaica", "Kingston"), ("Brazil", "Brasília"),
    ("Argentina", "Buenos Aires"), ("Chile", "Santiago"), ("Peru", "Lima"), ("Colombia", "Bogotá"),
    ("Venezuela", "Caracas"), ("Ecuador", "Quito"), ("Uruguay", "Montevideo"), ("Paraguay", "Asunción"),
)

COLOURS = (
    ("the sky on a clear day", "blue"), ("grass", "green"), ("snow", "white"), ("a ripe banana", "yellow"),
    ("coal", "black"), ("a ripe tomato", "red"), ("a carrot", "orange"), ("a lemon", "yellow"),
    ("milk", "white"), ("a ripe strawberry", "red"), ("a lime", "green"), ("a crow", "black"),
    ("a pumpkin", "orange"), ("an aubergine", "purple"), ("a polar bear", "white"), ("a cucumber", "green"),
    ("an emerald", "green"), ("a sapphire", "blue"), ("a flamingo", "pink"), ("a blueberry", "blue"),
    ("chocolate", "brown"), ("a fire engine", "red"), ("a school bus in the United States", "yellow"),
    ("a raven", "black"), ("a swan", "white"),
)


def _pair(question: str, answer: str) -> dict[str, list[dict[str, str]]]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _capitalised(text: str) -> str:
    return text[0].upper() + text[1:]


def instruction_rows() -> list[dict[str, list[dict[str, str]]]]:
    """Every question/answer pair, as OpenAI-style `messages` rows, in a fixed order."""
    rows = [_pair(f"What is the capital of {country}?", f"The capital of {country} is {city}.")
            for country, city in CAPITALS]
    rows += [_pair(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.") for a in range(1, 11) for b in range(1, 11)]
    rows += [_pair(f"What is {a} times {b}?", f"{a} times {b} is {a * b}.") for a in range(2, 7) for b in range(1, 11)]
    rows += [_pair(f"What colour is {thing}?", f"{_capitalised(thing)} is {colour}.") for thing, colour in COLOURS]
    return rows


def alpaca_rows() -> list[dict[str, str]]:
    """A few of the same facts in Alpaca's instruction/input/output shape (the lora example's CSV)."""
    rows = [{"instruction": "What is the capital of this country?", "input": country,
             "output": f"The capital of {country} is {city}."} for country, city in CAPITALS[:12]]
    rows += [{"instruction": f"What is {a} plus {b}?", "input": "", "output": f"{a} plus {b} is {a + b}."}
             for a, b in ((2, 3), (4, 4), (7, 5), (9, 6))]
    rows += [{"instruction": "What colour is this?", "input": thing, "output": f"{_capitalised(thing)} is {colour}."}
             for thing, colour in COLOURS[:4]]
    return rows


def example_files() -> dict[str, str]:
    """The files of examples/data/ by name, with their exact text."""
    jsonl = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in instruction_rows())
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["instruction", "input", "output"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(alpaca_rows())
    return {"instructions.jsonl": jsonl, "alpaca-sample.csv": out.getvalue()}


def write_examples(folder: str | Path) -> list[Path]:
    """Write the example dataset files into `folder`."""
    written = []
    for name, text in example_files().items():
        path = Path(folder) / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
