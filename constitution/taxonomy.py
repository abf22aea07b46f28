"""The fixed tag taxonomy that principles are labelled with.

Harm tags name the hazard areas that red-team prompts and evaluation reports are
grouped by; quality tags name what a good answer must keep (helpfulness, honesty).
Adding a tag is a schema change: document it in ``principles/README.md``.
"""

from __future__ import annotations

HARM_TAGS: dict[str, str] = {
    "violent_crime": "Planning or carrying out violence against people or animals.",
    "nonviolent_crime": "Fraud, theft, scams, trespass and other crimes without violence.",
    "cyber": "Malware, intrusion into systems or accounts, denial of service.",
    "weapons": "Firearms, explosives, and chemical, biological, radiological or nuclear weapons.",
    "self_harm": "Suicide, self-injury and eating disorders.",
    "hate": "Demeaning or dehumanising people for a protected attribute.",
    "harassment": "Bullying, threats or intimidation aimed at individuals.",
    "sexual_content": "Explicit sexual material and sexual content without consent.",
    "child_safety": "Any sexualisation or endangerment of minors.",
    "privacy": "Doxxing, surveillance and misuse of personal data.",
    "specialized_advice": "Medical, legal or financial advice given without due care.",
    "misinformation": "False claims, fabricated facts and election misinformation.",
    "manipulation": "Deception, coercive persuasion and dark patterns.",
    "extremism": "Violent extremism and terrorist propaganda.",
    "intellectual_property": "Piracy, plagiarism and circumventing copyright protection.",
}

QUALITY_TAGS: dict[str, str] = {
    "helpfulness": "Answering the actual request usefully, without needless refusal or evasion.",
    "honesty": "Truthfulness, calibrated uncertainty, no fabrication or sycophancy.",
    "general": "Broad conduct that applies to every kind of request.",
}

TAGS: dict[str, str] = {**HARM_TAGS, **QUALITY_TAGS}
