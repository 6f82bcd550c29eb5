Feature: Jobs run in the GPU host's pueue queue
  On the GPU host the jobs go to pueue. caseflow adds each case as one pueue
  task labelled with the case, asks pueue about all its tasks with one
  `pueue status` per tick, and understands pueue 3.x and 4.x alike.
  (These scenarios run against a pueue emulator that follows pueue's command
  line and JSON contract: no pueue binary can be installed on our test machines.)

  Scenario Outline: A case runs to success in pueue <version>
    Given the GPU host runs pueue <version>
    And caseflow is running
    When the case folder "heart_0001" is dropped into the inbox
    Then the case "heart_0001" ends in success
    And pueue holds exactly one task for "heart_0001", and it succeeded
    And the job log of "heart_0001" is kept with the case

    Examples:
      | version |
      | 3.4.1   |
      | 4.0.4   |

  Scenario: Results come home over SSH; only a success's folder on the GPU host is removed
    Given the GPU host runs pueue 4.0.4
    And caseflow removes a case's folder on the GPU host after a success
    And caseflow is running
    When the case folder "heart_0009" is dropped into the inbox
    And the case folder "heart_0010" whose job exits with code 4 is dropped into the inbox
    Then the case "heart_0009" ends in success
    And the case "heart_0010" ends in failure
    And the results of "heart_0009" are output/result.txt, job_env.txt and caseflow-job.log
    And the results of "heart_0010" are output/result.txt, job_env.txt and caseflow-job.log
    And the job log among the results of "heart_0010" says "job of case"
    And the folder of "heart_0009" is gone from the GPU host
    And the folder of "heart_0010" is still on the GPU host

  Scenario: A failing job reports its exit code
    Given the GPU host runs pueue 4.0.4
    And caseflow is running
    When the case folder "heart_0002" whose job exits with code 3 is dropped into the inbox
    Then the case "heart_0002" ends in failure
    And the reason given for "heart_0002" is "job exited with code 3"
    And the job log of "heart_0002" is kept with the case

  Scenario: A task cleaned out of pueue while caseflow was stopped is not found
    Given the GPU host runs pueue 4.0.4
    And caseflow is running
    And the case "heart_0003" for gpu_a is running and waits to be released
    And caseflow has been stopped
    When the job of "heart_0003" is released
    And its pueue task has finished
    And someone runs "pueue clean" on the GPU host
    And caseflow starts
    Then the case "heart_0003" ends in not_found
    And the reason given for "heart_0003" mentions "no longer knows"
    And no GPU slot is held

  Scenario: Unreadable answers from pueue end the case after a few tries, quoting them
    Given the GPU host runs pueue 4.0.4
    And caseflow is running
    And the case "heart_0004" for gpu_a is running and waits to be released
    When pueue starts answering "status" with "<html>502 Bad Gateway"
    Then the case "heart_0004" ends in failure
    And the reason given for "heart_0004" mentions "not JSON: '<html>502 Bad Gateway'"
    And the reason given for "heart_0004" mentions "after 3 attempts"

  Scenario: A pueue daemon restart kills the running task and pauses the group
    Given the GPU host runs pueue 4.0.4
    And caseflow is running
    And the case "heart_0005" for gpu_b is running and waits to be released
    And another user's task waits in pueue group gpu_b
    When the pueue daemon restarts
    Then the case "heart_0005" ends in failure
    And the reason given for "heart_0005" mentions "killed"
    And caseflow status says that pueue group gpu_b is paused

  Scenario: No second task after caseflow dies between adding the task and recording it
    Given the GPU host runs pueue 4.0.4
    And caseflow runs as a process that will be killed right after its next "pueue add"
    When the case folder "heart_0006" is dropped into the inbox
    Then caseflow dies right after adding the task for "heart_0006"
    When caseflow is started again as a process
    Then the case "heart_0006" ends in success
    And pueue holds exactly one task for "heart_0006", and it succeeded
